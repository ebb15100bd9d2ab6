import pytest

from chutes_lb.proxy.validation import RequestRejected, validate_completion_body

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("body", [
    b'{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"tools":[{"type":"function","function":{"name":"f","parameters":{}}}],"tool_choice":"auto","response_format":{"type":"json_object"},"stream":true,"stream_options":{"include_usage":true},"n":2,"stop":["x"],"max_tokens":10,"extra":1}',
    b'{"model":"m","messages":[{"role":"system","content":"' + b"long " * 20000 + b'"},{"role":"user","content":"q"}]}',
])
def test_what_real_clients_send_passes(body):
    assert validate_completion_body("chat", body)["model"] == "m"


@pytest.mark.parametrize("kind,body,param", [
    ("chat", b"", None), ("chat", b"nope", None), ("chat", b"null", None), ("chat", b'"s"', None),
    ("chat", b'{"messages":[{"role":"user"}]}', "model"), ("chat", b'{"model":3,"messages":[{"role":"user"}]}', "model"),
    ("chat", b'{"model":"m"}', "messages"), ("chat", b'{"model":"m","messages":[]}', "messages"),
    ("chat", b'{"model":"m","messages":[1]}', "messages[0]"), ("chat", b'{"model":"m","messages":[{"role":1}]}', "messages[0]"),
    ("chat", b'{"model":"m","messages":[{"role":"u"}],"stream":1}', "stream"),
    ("chat", b'{"model":"m","messages":[{"role":"u"}],"n":0}', "n"), ("chat", b'{"model":"m","messages":[{"role":"u"}],"max_tokens":true}', "max_tokens"),
    ("text", b'{"model":"m"}', "prompt"), ("text", b'{"model":"m","prompt":5}', "prompt"),
])
def test_certainly_wrong_bodies_are_rejected_naming_the_field(kind, body, param):
    with pytest.raises(RequestRejected) as info:
        validate_completion_body(kind, body)
    assert info.value.status == 400 and info.value.param == param and info.value.message
