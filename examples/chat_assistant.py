"""A chat assistant whose older turns fold into LoRA memory: the prompt keeps only the newest
turns, and what fell out of it is still there, as memories switched on for every reply.

    python examples/chat_assistant.py            # 24 turns on the embedded default
    python examples/chat_assistant.py --smoke    # 6 turns (what the test suite runs)

Shows: :class:`integrations.D2LChatMessageHistory` (recent messages verbatim up to a token budget,
older ones internalized), and :class:`integrations.D2LChatModel` called with the folded
conversation's memory routed in. The user tells the assistant invented facts, one note per turn,
then asks about all of them: the newest are still in the prompt, the oldest only in memory.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

from langchain_core.messages import AIMessage, HumanMessage

from d2l_lab.world import make_fact_document
from integrations import D2LChatMessageHistory, D2LChatModel, default_agent_memory

NAMESPACE = ("alice", "chat-1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--turns", type=int, default=24, help="user turns before the questions")
    parser.add_argument("--budget", type=int, default=200, help="tokens of conversation kept verbatim")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="a short chat, for the test suite")
    args = parser.parse_args(argv)
    turns, budget = (6, 80) if args.smoke else (args.turns, args.budget)
    rng = random.Random(args.seed)
    told = [make_fact_document(rng, 2) for _ in range(turns)]  # one short note per turn
    with tempfile.TemporaryDirectory() as tmp, default_agent_memory(Path(tmp) / "store") as memory:
        history = D2LChatMessageHistory(memory, NAMESPACE, max_tokens=budget)
        model = D2LChatModel(host=memory.host, max_tokens=12)
        for note in told:
            history.add_messages([HumanMessage(note.text), AIMessage("Noted.")])
        print(
            f"{2 * turns} messages so far: {len(history.messages)} verbatim, the rest in {len(history.memory_ids)} memories"
        )
        verbatim = {m.text for m in history.messages}
        scores = {"in the prompt": [0, 0], "folded into memory": [0, 0]}
        for note in told:
            where = "in the prompt" if note.text in verbatim else "folded into memory"
            for qa in note.questions:
                routed = memory.route(NAMESPACE, qa.question, top_k=1)  # the memory that holds this fact
                keys = memory.resident_keys(NAMESPACE, routed)
                reply = model.invoke([*history.messages, HumanMessage(qa.question)], active_adapters=keys).text.strip()
                scores[where][0] += reply == qa.answer
                scores[where][1] += 1
                print(f"{qa.question:<45} gold {qa.answer:<10} answer {reply:<10} ({where})")
        print("\n" + "; ".join(f"told {where}: {right}/{total}" for where, (right, total) in scores.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
