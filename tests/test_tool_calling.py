"""Tool calling through D2LChatModel: schemas into the chat template, calls out of generated text."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableBinding
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode
from pydantic import BaseModel

from d2l_memory import AdapterHost, D2LMemoryError
from d2l_memory.errors import ModelError
from d2l_memory.testing import tiny_model, tiny_tokenizer
from integrations import D2LChatModel, chat_messages, parse_tool_calls

# A template that renders tools and tool calls, as Qwen's and Llama 3.1's do (in a tiny vocabulary).
TOOL_TEMPLATE = (
    "{% if tools %}<|system|> {% for t in tools %}{{ t.function.name }} ( {% for p in t.function.parameters.properties"
    " %}{{ p }} {% endfor %}) {% endfor %}<|end|>{% endif %}"
    "{% for m in messages %}<|{{ m.role }}|> {{ m.content }}"
    "{% for c in m.tool_calls or [] %} {{ c.function.name }} {{ c.function.arguments | tojson }}{% endfor %}"
    "{% if m.tool_call_id %} {{ m.tool_call_id }}{% endif %}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@tool
def code(city: str) -> str:
    """the code of a city"""
    return {"w1": "5 5"}.get(city, "?")


def tool_host() -> AdapterHost:
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = TOOL_TEMPLATE
    return AdapterHost(tiny_model("llama"), tokenizer)


def test_hermes_and_qwen_tagged_calls_are_read_with_the_prose_around_them():
    reply = parse_tool_calls(
        'Let me look.\n<tool_call>\n{"name": "code", "arguments": {"city": "w1"}}\n</tool_call>\n'
        '<tool_call>{"name": "code", "arguments": {"city": "w2"}}</tool_call>'
    )
    assert reply.content == "Let me look."
    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [("code", {"city": "w1"}), ("code", {"city": "w2"})]
    assert len({c["id"] for c in reply.tool_calls}) == 2 and reply.invalid_tool_calls == []
    assert all(len(c["id"]) == 9 and c["id"].isalnum() for c in reply.tool_calls)  # Mistral's templates need this


def test_llama_and_mistral_json_replies_are_read():
    llama = parse_tool_calls('{"name": "code", "parameters": {"city": "w1"}}')
    assert llama.content == "" and [(c["name"], c["args"]) for c in llama.tool_calls] == [("code", {"city": "w1"})]
    mistral = parse_tool_calls(
        '[{"name": "a", "arguments": {}, "id": "abcDEF123"}, {"name": "b", "arguments": "{\\"x\\": 1}"}]'
    )
    assert [(c["name"], c["args"]) for c in mistral.tool_calls] == [("a", {}), ("b", {"x": 1})]
    assert mistral.tool_calls[0]["id"] == "abcDEF123"  # the id the model wrote is kept


def test_prose_and_json_answers_are_not_calls():
    answers = ("the code is 5 5", "[1] is cited", '{"answer": 3}', "{not json", '{"name": "Alice", "age": 3}')
    for text in (*answers, '{"name": "weather", "arguments": {}}'):
        reply = parse_tool_calls(text, tool_names=["code"])
        assert reply.content == text and reply.tool_calls == [] and reply.invalid_tool_calls == []


def test_a_broken_call_is_reported_not_dropped():
    reply = parse_tool_calls('<tool_call>{"name": "code", "arguments": {"city": ')  # cut off by the token limit
    assert reply.tool_calls == []
    [bad] = reply.invalid_tool_calls
    assert bad["args"].startswith('{"name": "code"') and "not JSON" in bad["error"]
    [bad] = parse_tool_calls('<tool_call>{"name": "code", "arguments": [1]}</tool_call>').invalid_tool_calls
    assert (bad["name"], bad["args"]) == ("code", "[1]") and "JSON object" in bad["error"]
    [bad] = parse_tool_calls('<tool_call>{"name": "weather", "arguments": {}}</tool_call>', ["code"]).invalid_tool_calls
    assert "no tool named 'weather'" in bad["error"]


def test_bound_tools_reach_the_prompt_through_the_chat_template():
    host = tool_host()
    model = D2LChatModel(host=host, max_tokens=4)
    question = [HumanMessage("what is the code of w1 ?")]
    with_tools = model.bind_tools([code]).invoke(question)
    without = model.invoke(question)
    assert isinstance(with_tools, AIMessage)
    assert with_tools.usage_metadata["input_tokens"] > without.usage_metadata["input_tokens"]
    prompt = host.tokenizer.decode(host.encode_prompt(chat_messages(question), [{"function": code_schema()}])[0])
    assert "code ( city )" in prompt
    none = model.bind_tools([code], tool_choice="none").invoke(question)
    assert none.usage_metadata["input_tokens"] == without.usage_metadata["input_tokens"]


def code_schema() -> dict:
    return {"name": "code", "parameters": {"properties": {"city": {"type": "string"}}}}


def test_a_call_runs_in_a_langgraph_tool_node_and_its_result_renders_back():
    reply = parse_tool_calls('<tool_call>{"name": "code", "arguments": {"city": "w1"}}</tool_call>')
    call = AIMessage(reply.content, tool_calls=reply.tool_calls)
    graph = StateGraph(MessagesState)
    graph.add_node("tools", ToolNode([code]))
    graph.add_edge(START, "tools")
    result = graph.compile().invoke({"messages": [HumanMessage("what is the code of w1 ?"), call]})["messages"][-1]
    assert isinstance(result, ToolMessage) and result.content == "5 5"
    rendered = chat_messages([call, result])
    call_id = reply.tool_calls[0]["id"]
    assert rendered[0]["tool_calls"] == [
        {"type": "function", "id": call_id, "function": {"name": "code", "arguments": {"city": "w1"}}}
    ]
    assert rendered[1] == {"role": "tool", "content": "5 5", "tool_call_id": call_id, "name": "code"}
    prompt = tool_host().tokenizer.apply_chat_template(rendered, tokenize=False)
    assert 'code {"city": "w1"}' in prompt and "5 5" in prompt


CALL = '{"name": "code", "arguments": {"city": "w1"}}'
BROKEN = '{"name": "code", "arguments": [1]}'
LESSONS = {  # question -> the reply the tiny model is taught to write
    "what is the code of w1 ?": ["<tool_call>", CALL, "</tool_call>"],
    "what is the code of w2 ?": ["<tool_call>", BROKEN, "</tool_call>"],
    "what is the code of w3 ?": ["the", "code", "is", "5"],
}


@pytest.fixture(scope="module")
def taught_host() -> AdapterHost:
    """A tiny model taught, by gradient descent on these three replies, to call a tool when asked
    about w1, to write a broken call about w2 and to answer w3 in prose."""
    host = tool_host()
    host.tokenizer.add_tokens(["<tool_call>", "</tool_call>", CALL, BROKEN])  # whole strings, decoded verbatim
    schemas = [convert_to_openai_tool(code)]
    rows = []
    for question, reply in LESSONS.items():
        prompt = host.encode_prompt([{"role": "user", "content": question}], schemas)[0]
        target = torch.tensor([*host.tokenizer.convert_tokens_to_ids(reply), host.tokenizer.eos_token_id])
        rows.append((torch.cat([prompt, target]), len(prompt)))
    torch.manual_seed(0)
    model = host.model.train().requires_grad_(True)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        loss = sum(
            F.cross_entropy(model(input_ids=ids[None]).logits[0, start - 1 : -1], ids[start:]) for ids, start in rows
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval().requires_grad_(False)
    return host


def test_a_model_that_calls_a_tool_gets_tool_calls_from_invoke_and_stream(taught_host):
    model = D2LChatModel(host=taught_host, max_tokens=8).bind_tools([code])
    question = [HumanMessage("what is the code of w1 ?")]
    reply = model.invoke(question)
    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [("code", {"city": "w1"})]
    assert reply.content == "" and reply.response_metadata["finish_reason"] == "tool_calls"
    chunks = list(model.stream(question))  # tools bound: the whole reply in one chunk
    assert len(chunks) == 1 and [(c["name"], c["args"]) for c in chunks[0].tool_calls] == [("code", {"city": "w1"})]
    prose = model.invoke([HumanMessage("what is the code of w3 ?")])
    assert prose.content == "the code is 5" and prose.tool_calls == [] and prose.invalid_tool_calls == []


def test_a_broken_call_stays_invalid_through_invoke_and_stream(taught_host):
    model = D2LChatModel(host=taught_host, max_tokens=8).bind_tools([code])
    question = [HumanMessage("what is the code of w2 ?")]
    for reply in (model.invoke(question), next(iter(model.stream(question)))):
        assert reply.tool_calls == []
        [bad] = reply.invalid_tool_calls
        assert (bad["name"], bad["args"]) == ("code", "[1]") and "JSON object" in bad["error"]


def test_a_taught_call_runs_in_a_graph_and_the_next_turn_renders(taught_host):
    model = D2LChatModel(host=taught_host, max_tokens=8).bind_tools([code])
    graph = StateGraph(MessagesState)
    graph.add_node("agent", lambda state: {"messages": [model.invoke(state["messages"])]})
    graph.add_node("tools", ToolNode([code]))
    graph.add_edge(START, "agent")
    graph.add_edge("agent", "tools")
    messages = graph.compile().invoke({"messages": [HumanMessage("what is the code of w1 ?")]})["messages"]
    call, result = messages[1], messages[2]
    assert isinstance(result, ToolMessage) and result.content == "5 5"
    assert result.tool_call_id == call.tool_calls[0]["id"] and len(result.tool_call_id) == 9
    follow_up = model.invoke(messages)  # the call and its result go back through the template
    assert follow_up.usage_metadata["input_tokens"] > model.invoke(messages[:1]).usage_metadata["input_tokens"]


def test_functions_tools_pydantic_models_and_schemas_all_bind():
    class Adder(BaseModel):
        """Add two integers."""

        a: int
        b: int

    def add(a: int, b: int) -> int:
        """Return the sum of two integers."""
        return a + b

    bound = D2LChatModel(host=tool_host()).bind_tools([add, tool(add), Adder, Adder.model_json_schema()])
    assert isinstance(bound, RunnableBinding)
    assert [t["function"]["name"] for t in bound.kwargs["tools"]] == ["add", "add", "Adder", "Adder"]


def test_clear_errors_for_tools_the_model_cannot_take():
    embedded_like = D2LChatModel(host=AdapterHost(tiny_model("llama"), tiny_tokenizer()), max_tokens=2)
    with pytest.raises(ModelError, match="does not render tool schemas"):
        embedded_like.bind_tools([code]).invoke("hi")
    with pytest.raises(D2LMemoryError, match="not force a call"):
        embedded_like.bind_tools([code], tool_choice="any")
    with pytest.raises(NotImplementedError, match="no structured output"):
        embedded_like.with_structured_output(code_schema())


def test_a_separate_tool_use_template_is_the_one_checked_and_used():
    host = tool_host()
    host.tokenizer.chat_template = {
        "default": tiny_tokenizer().chat_template,
        "tool_use": TOOL_TEMPLATE,
    }  # Hermes-style
    reply = D2LChatModel(host=host, max_tokens=2).bind_tools([code]).invoke("what is the code of w1 ?")
    assert isinstance(reply, AIMessage)
