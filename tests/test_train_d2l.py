import random

from d2l_lab.formats import qa_messages
from d2l_lab.meta_train import encode_pair
from d2l_lab.train_d2l import world_example
from d2l_lab.world import RELATIONS
from d2l_memory.chunking import wrapped_chunks
from d2l_memory.embedded import load_default


def test_world_examples_encode_for_distillation():
    """Teacher and student see the same answers; chunks re-wrap the document as a user turn."""
    _, tokenizer = load_default()
    rng = random.Random(0)
    for _ in range(30):
        example = world_example(rng)
        teacher, student = encode_pair(
            tokenizer, qa_messages(example.document, example.qas), qa_messages(None, example.qas)
        )
        assert len(teacher[0]) <= 512 and sum(student[1]) == sum(teacher[1]) > 0
        chunks, tokens = wrapped_chunks(tokenizer, example.document, 3)
        assert len(chunks) == min(3, tokens) and sum(len(c) for c in chunks) > tokens
        assert all(c[0] == tokenizer.bos_token_id and c[-1] == tokenizer.eos_token_id for c in chunks)


def test_focus_relations_get_documents_of_their_own():
    numbers = tuple(r for r in RELATIONS if r.name in ("age", "door_code"))
    rng = random.Random(1)
    focused = [world_example(rng, numbers, focus_share=1.0) for _ in range(20)]
    assert {qa.fact.relation.name for example in focused for qa in example.qas} == {"age", "door_code"}
    mixed = [world_example(rng, numbers, focus_share=0.0) for _ in range(40)]
    assert len({qa.fact.relation.name for example in mixed for qa in example.qas}) > 2
