"""The audio socket's messages, sans-io (docs/protocol.md §13): the metadata frame, jambonz's
events, the app's messages, listen URLs and the drop-oldest buffer."""

from __future__ import annotations

import base64
import json
import sys
from array import array
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jambonz_trio._errors import LocalProtocolError, RemoteProtocolError
from jambonz_trio._protocol._audio import (
    CHUNK_OVERHEAD,
    KNOWN_METADATA_KEYS,
    LISTEN_TOKEN_PARAM,
    MAX_METADATA_BYTES,
    PLAY_AUDIO_SAMPLE_RATES,
    AudioMetadata,
    ChunkBuffer,
    Dtmf,
    MarkEvent,
    PlayDone,
    UnknownAudioMessage,
    add_listen_token,
    check_mark_name,
    check_pcm,
    listen_token,
    parse_audio_event,
    parse_metadata,
    render_clear_marks,
    render_disconnect,
    render_kill_audio,
    render_mark,
    render_play_audio,
    resolve_listen_url,
    without_marker_samples,
)

# -- the metadata frame ---------------------------------------------------------------------

#: What FS 0.9.8 sends (lib/tasks/listen.js:168-171 + lib/session/call-info.js:135-171).
FS_METADATA: dict[str, Any] = {
    "sampleRate": 8000,
    "mixType": "mono",
    "callSid": "b6bd1ba0-b4b8-4e1e-8f2a-5c1e9b0a7d11",
    "direction": "inbound",
    "from": "+15083084809",
    "to": "+15083728299",
    "callId": "abc@10.0.0.1",
    "sbcCallid": "sbc-1",
    "sipStatus": 200,
    "sipReason": "OK",
    "callStatus": "in-progress",
    "callerId": "+15083084809",
    "accountSid": "acc-1",
    "traceId": "trace-1",
    "applicationSid": "app-1",
    "fsSipAddress": "10.0.0.2:5060",
}


def test_fs_metadata_is_typed() -> None:
    text = json.dumps({**FS_METADATA, "customerData": {"k": "v"}, "agent": "bob", "n": 3})
    meta = parse_metadata(text)
    assert meta.complete and meta.problems == ()
    assert (meta.sample_rate, meta.mix_type, meta.channels, meta.bytes_per_second) == (8000, "mono", 1, 16000)
    assert meta.call_sid == FS_METADATA["callSid"]
    call = meta.call
    assert (call.from_, call.to, call.direction, call.sip_status) == (
        "+15083084809",
        "+15083728299",
        "inbound",
        200,
    )
    assert (call.account_sid, call.application_sid, call.sbc_callid) == ("acc-1", "app-1", "sbc-1")
    assert call.customer_data == {"k": "v"} and call.fs_sip_address == "10.0.0.2:5060"
    assert meta.custom == {"agent": "bob", "n": 3}  # the verb's metadata, merged at top level
    assert meta.raw["callId"] == "abc@10.0.0.1"


def test_stereo_has_two_channels() -> None:
    meta = parse_metadata('{"sampleRate":16000,"mixType":"stereo"}')
    assert (meta.channels, meta.bytes_per_second) == (2, 64000)


@pytest.mark.parametrize(
    ("value", "rate", "problem"),
    [
        ("16000", 16000, "sampleRate sent as str"),
        (16000.0, 16000, "sampleRate sent as float"),
        ("fast", 8000, "unreadable sampleRate"),
        (None, 8000, "unreadable sampleRate"),
        (-8000, 8000, "unreadable sampleRate"),
        (True, 8000, "unreadable sampleRate"),
    ],
)
def test_sample_rate_tolerance(value: Any, rate: int, problem: str) -> None:
    meta = parse_metadata(json.dumps({"sampleRate": value, "callSid": "c"}))
    assert meta.sample_rate == rate
    assert any(problem in p for p in meta.problems)


def test_verb_metadata_can_overwrite_jambonz_keys() -> None:
    # Object.assign({sampleRate, mixType}, callInfo, verb.metadata): the verb's keys win
    meta = parse_metadata('{"sampleRate":8000,"callSid":"a","mixType":{"x":1},"callSid":"b"}')
    assert meta.call_sid == "b"
    assert meta.mix_type == "mono" and any("mixType" in p for p in meta.problems)


def test_metadata_cut_at_8192_bytes_keeps_the_call() -> None:
    # The module copies at most 8192 bytes (mod_audio_fork.h:27, lws_glue.cpp:494): a verb
    # with big metadata arrives cut, as invalid JSON. The leading keys survive.
    full = json.dumps({**FS_METADATA, "transcript": "é" * 6000, "after": 1}, ensure_ascii=False)
    cut = full.encode()[:MAX_METADATA_BYTES]
    meta = parse_metadata(cut)
    assert not meta.complete
    assert meta.call_sid == FS_METADATA["callSid"] and meta.sample_rate == 8000
    assert "transcript" not in meta.raw and "after" not in meta.raw
    assert any("cut" in p for p in meta.problems)


def test_a_full_metadata_frame_of_small_values_is_read_whole() -> None:
    """Every frame the module can send (at most 8192 bytes) is parsed whole. The parse was
    capped at 4096 JSON values, which a frame of tiny values in the verb's metadata can pass
    (an empty list is a value in three bytes with its comma): such a frame lost everything,
    ``callSid`` and ``sampleRate`` included (the rate fell back to 8000)."""
    obj = {**FS_METADATA, "sampleRate": 16000, "customerData": {"slots": [[]] * 2500}}
    frame = json.dumps(obj, separators=(",", ":"))
    assert len(frame.encode()) <= MAX_METADATA_BYTES
    assert frame.count(",") + frame.count(":") + frame.count("[") + frame.count("{") > 4096
    meta = parse_metadata(frame)
    assert meta.complete and meta.call_sid == FS_METADATA["callSid"] and meta.sample_rate == 16000


@pytest.mark.parametrize("frame", ["", "null", "[1,2]", "not json", '"x"', "{", '{"a":', "{1:2}", "}"])
def test_hopeless_metadata_is_empty_not_an_error(frame: str) -> None:
    meta = parse_metadata(frame)
    assert not meta.complete or frame in ("{}",)
    assert meta.call_sid is None and meta.sample_rate == 8000


def test_metadata_json_bomb_is_refused_cheaply() -> None:
    meta = parse_metadata("{" + '"a":[' * 5000 + "]" * 5000 + "}")
    assert not meta.complete and meta.raw == {}


_JSON_LEAF = st.none() | st.booleans() | st.integers(-(10**12), 10**12) | st.text(max_size=20)
_JSON = st.recursive(
    _JSON_LEAF,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
_METADATA = st.dictionaries(st.text(max_size=12), _JSON, max_size=8).map(lambda d: {**FS_METADATA, **d})


@settings(max_examples=200)
@given(_METADATA, st.integers(0, 100_000))
def test_any_cut_yields_a_prefix_of_the_pairs(obj: dict[str, Any], cut: int) -> None:
    """Wherever the frame is cut, what is recovered is a subset of what was sent, in order,
    with values intact (a number cut short is never kept)."""
    text = json.dumps(obj, ensure_ascii=False)
    meta = parse_metadata(text[:cut])
    full = json.loads(text)
    recovered = list(meta.raw.items())
    assert recovered == list(full.items())[: len(recovered)]
    assert meta.complete == (cut >= len(text))
    if meta.complete:
        assert meta.raw == full
        assert meta.custom == {k: v for k, v in full.items() if k not in KNOWN_METADATA_KEYS}


@given(st.text(max_size=300) | st.binary(max_size=300))
def test_metadata_parsing_never_raises(frame: str | bytes) -> None:
    meta = parse_metadata(frame)
    assert isinstance(meta, AudioMetadata) and meta.sample_rate > 0


# -- events from jambonz --------------------------------------------------------------------


def test_dtmf_without_type_and_duration_as_string() -> None:
    # FS lib/tasks/listen.js:227: {event, dtmf, duration}; duration is a FreeSWITCH header string
    event = parse_audio_event('{"event":"dtmf","dtmf":"5","duration":"1600"}')
    assert event == Dtmf(digit="5", duration=1600)
    assert isinstance(event, Dtmf) and event.duration_ms == 200.0


def test_dtmf_odd_shapes() -> None:
    assert parse_audio_event('{"type":"dtmf","dtmf":"#"}') == Dtmf(digit="#", duration=None)
    assert parse_audio_event('{"event":"dtmf","dtmf":7,"duration":800}') == Dtmf(digit="7", duration=800)
    assert isinstance(parse_audio_event('{"event":"dtmf"}'), UnknownAudioMessage)


def test_play_done_with_strings_from_freeswitch() -> None:
    # FS lib/tasks/listen.js:270-276 + drachtio-fsmrf lib/endpoint.js:347-351
    text = (
        '{"type":"playDone","data":{"id":"p1","playbackSeconds":"1",'
        '"playbackMilliseconds":"1000","playbackLastOffsetPos":"8000"}}'
    )
    assert parse_audio_event(text) == PlayDone(
        id="p1", playback_seconds=1.0, playback_milliseconds=1000, last_offset_pos=8000
    )
    assert parse_audio_event('{"type":"playDone"}') == PlayDone()  # as documented
    assert parse_audio_event('{"type":"playDone","data":{"id":42}}') == PlayDone(id="42")


def test_mark_events_as_the_module_writes_them() -> None:
    # lws_glue.cpp:570-576 (spaces and all)
    playout = parse_audio_event('{"type": "mark", "data": {"name":"m1", "event": "playout"}}')
    cleared = parse_audio_event('{"type": "mark", "data": {"name":"m1", "event": "cleared"}}')
    assert playout == MarkEvent(name="m1", event="playout")
    assert cleared == MarkEvent(name="m1", event="cleared")


@pytest.mark.parametrize("text", ['{"type":"transcription","data":{}}', '{"x":1}', '{"type":"mark"}'])
def test_other_objects_are_kept_unknown(text: str) -> None:
    event = parse_audio_event(text)
    assert isinstance(event, UnknownAudioMessage) and event.raw == json.loads(text)


@pytest.mark.parametrize("text", ["", "nope", "[]", "1", '{"a":NaN}', "[" * 10000])
def test_non_objects_raise_remote_protocol_error(text: str) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_audio_event(text)


@given(st.text(max_size=200))
def test_event_parsing_raises_nothing_else(text: str) -> None:
    try:
        parse_audio_event(text)
    except RemoteProtocolError:
        pass


# -- messages to jambonz --------------------------------------------------------------------


def test_play_audio_raw_shape() -> None:
    text = render_play_audio(b"\x01\x00\x02\x00", sample_rate=8000, id="p1", queue_play=True)
    assert json.loads(text) == {
        "type": "playAudio",
        "data": {
            "audioContentType": "raw",
            "sampleRate": 8000,
            "audioContent": base64.b64encode(b"\x01\x00\x02\x00").decode(),
            "id": "p1",
            "queuePlay": True,
        },
    }


@given(
    st.binary(max_size=2000).map(lambda b: b[: len(b) // 2 * 2]),
    st.sampled_from(sorted(PLAY_AUDIO_SAMPLE_RATES)),
)
def test_play_audio_round_trip(audio: bytes, rate: int) -> None:
    data = json.loads(render_play_audio(audio, sample_rate=rate))["data"]
    assert base64.b64decode(data["audioContent"], validate=True) == audio
    assert data["sampleRate"] == rate and isinstance(data["sampleRate"], int)  # a number, never a string
    assert data["audioContentType"] == "raw"  # always present: the module strcmp()s it


def test_play_audio_refusals() -> None:
    with pytest.raises(LocalProtocolError, match="16000"):
        render_play_audio(b"\x00\x00", sample_rate=11025)
    with pytest.raises(LocalProtocolError, match="sampleRate"):
        render_play_audio(b"\x00\x00")
    with pytest.raises(LocalProtocolError, match="whole number"):
        render_play_audio(b"\x00", sample_rate=8000)
    with pytest.raises(LocalProtocolError, match="RIFF"):
        render_play_audio(b"not a wav file", content_type="wav")
    with pytest.raises(LocalProtocolError, match="content type"):
        render_play_audio(b"", content_type="mp3", sample_rate=8000)  # type: ignore[arg-type]


def test_play_audio_wav_needs_no_rate() -> None:
    wav = b"RIFF\x24\x00\x00\x00WAVEfmt "
    data = json.loads(render_play_audio(wav, content_type="wav"))["data"]
    assert "sampleRate" not in data and data["audioContentType"] == "wav"


def test_simple_messages() -> None:
    assert json.loads(render_kill_audio()) == {"type": "killAudio"}
    assert json.loads(render_disconnect()) == {"type": "disconnect"}
    assert json.loads(render_clear_marks()) == {"type": "clearMarks"}
    assert json.loads(render_mark("second-1")) == {"type": "mark", "data": {"name": "second-1"}}


def _module_mark_event(name: str) -> str:
    """The event text mod_audio_fork builds for a mark (lws_glue.cpp:573-575)."""
    return '{"type": "mark", "data": {"name":"' + name + '", "event": "playout"}}'


@given(st.text(max_size=40))
def test_every_accepted_mark_name_comes_back_intact(name: str) -> None:
    """The module echoes names unescaped: a name we accept always makes a valid event that
    parses back to the same name; a name we refuse would not have."""
    try:
        text = render_mark(name)
    except LocalProtocolError:
        if not name:
            return  # refused for clarity, not for the wire
        with pytest.raises((RemoteProtocolError, AssertionError, UnicodeEncodeError)):
            event = parse_audio_event(_module_mark_event(name))
            _module_mark_event(name).encode()
            assert event == MarkEvent(name=name, event="playout")
        return
    assert json.loads(text)["data"]["name"] == name
    assert parse_audio_event(_module_mark_event(name)) == MarkEvent(name=name, event="playout")


@pytest.mark.parametrize("name", ["", 'a"b', "a\\b", "a\nb", "\x1f"])
def test_bad_mark_names(name: str) -> None:
    with pytest.raises(LocalProtocolError):
        check_mark_name(name)


def _freeswitch_argv(cmd: str, arraylen: int = 10) -> list[str]:
    """A model of FreeSWITCH's ``switch_separate_string(cmd, ' ', argv, arraylen)``
    (``src/switch_utils.c``: ``separate_string_blank_delim`` then ``cleanup_separated_string``
    on each argument): split on spaces outside single quotes, a backslash skipping the next
    character; then each argument loses its single quotes and its escapes (``\\'``,
    ``\\"``, ``\\\\``, ``\\n``, ``\\r``, ``\\t``, ``\\s``)."""
    bounds: list[list[int]] = []
    i, n, state, inside = 0, len(cmd), "start", False
    while i < n and len(bounds) < arraylen:
        if state == "start":
            bounds.append([i, n])
            state = "skip"
        elif state == "skip":
            if cmd[i] == " ":
                i += 1
            else:
                state = "find"
        elif state == "find":
            if cmd[i] == "\\":
                i += 1
            elif cmd[i] == "'":
                inside = not inside
            elif cmd[i] == " " and not inside:
                bounds[-1][1] = i
                state = "end"
            i += 1
        elif cmd[i] == " ":
            i += 1
        else:
            state = "start"
    return [_freeswitch_cleanup(cmd[a:b]) for a, b in bounds]


def _freeswitch_cleanup(arg: str) -> str:
    unescape = {"n": "\n", "r": "\r", "t": "\t", "s": " "}
    arg = arg.lstrip(" ")
    out: list[str] = []
    end: int | None = None
    inside = False
    i = 0
    while i < len(arg):
        ch = arg[i]
        nxt = arg[i + 1] if i + 1 < len(arg) else ""
        if ch == "\\" and (nxt in ("'", '"', "\\") or nxt in unescape):
            out.append(unescape.get(nxt, nxt))
            end = len(out)
            i += 2
            continue
        if ch == "'" and (inside or "'" in arg[i + 1 :]):
            inside = not inside
            if inside:
                end = len(out)
        else:
            out.append(ch)
            if ch != " " or inside:
                end = len(out)
        i += 1
    return "".join(out if end is None else out[:end])


def _play_done_as_jambonz_sends_it(clip_id: str) -> str:
    """The ``playDone`` text of a clip: FS JSON-stringifies it (lib/tasks/listen.js:270-278),
    drachtio-fsmrf wraps it in single quotes for ``uuid_audio_fork <uuid> send_text <bug>
    '<json>'`` (``forkAudioSendText``), and mod_audio_fork sends the fourth argument FreeSWITCH
    parsed (mod_audio_fork.c:191, :241-249)."""
    obj = {
        "type": "playDone",
        "data": {"id": clip_id, "playbackSeconds": "1", "playbackMilliseconds": "1000"},
    }
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return _freeswitch_argv(f"uuid-1 send_text audio_fork '{text}'")[3]


def test_the_freeswitch_model_passes_plain_json_through() -> None:
    assert _freeswitch_argv('u send_text b \'{"a":"x y"}\'') == ["u", "send_text", "b", '{"a":"x y"}']


@given(st.text(max_size=30))
def test_every_accepted_clip_id_comes_back_in_its_play_done(clip_id: str) -> None:
    """jambonz hands the id back through FreeSWITCH's argument parsing, which drops single
    quotes and unescapes backslashes: an id we accept always comes back intact in its
    ``playDone``; one we refuse would not have (the app would wait for it for ever)."""
    try:
        render_play_audio(b"\x00\x00", sample_rate=8000, id=clip_id)
    except LocalProtocolError:
        if not set(clip_id) & set("'\"\\\n\r\t"):
            return  # other control characters: refused for a simple rule (cJSON cuts at NUL)
        with pytest.raises((RemoteProtocolError, AssertionError)):
            event = parse_audio_event(_play_done_as_jambonz_sends_it(clip_id))
            assert isinstance(event, PlayDone) and event.id == clip_id
        return
    event = parse_audio_event(_play_done_as_jambonz_sends_it(clip_id))
    assert isinstance(event, PlayDone) and event.id == clip_id


@pytest.mark.parametrize("clip_id", ["it's", 'say "hi"', "back\\slash", "two\nlines", "tab\there"])
def test_clip_ids_jambonz_cannot_hand_back_are_refused(clip_id: str) -> None:
    with pytest.raises(LocalProtocolError, match="id"):
        render_play_audio(b"\x00\x00", sample_rate=8000, id=clip_id)


def test_pcm_must_be_whole_frames() -> None:
    check_pcm(b"\x00\x00")
    check_pcm(b"\x00" * 4, channels=2)
    with pytest.raises(LocalProtocolError):
        check_pcm(b"\x00" * 2, channels=2)


# -- listen URLs ----------------------------------------------------------------------------


def test_relative_url_resolves_against_the_call_hook_base() -> None:
    # FS lib/session/call-session.js:1446-1448 + base-requestor.js:25-27: path, query and
    # fragment of the call hook are dropped
    r = resolve_listen_url("/audio?x=1", call_url="ws://127.0.0.1:3000/calls?y=2#rc=3")
    assert (r.url, r.username, r.password) == ("ws://127.0.0.1:3000/audio?x=1", None, None)
    r = resolve_listen_url("/a", call_url="wss://user:pw@app.example.com/calls")
    assert r.url == "wss://app.example.com/a"


def test_relative_url_takes_the_call_hook_credentials() -> None:
    # call-session.js:1449-1454: they replace wsAuth
    r = resolve_listen_url(
        "/a", call_url="ws://h:1/", call_username="u", call_password="p", ws_username="x", ws_password="y"
    )
    assert (r.username, r.password) == ("u", "p")
    r = resolve_listen_url("/a", call_url="ws://h:1/", ws_username="x", ws_password="y")
    assert (r.username, r.password) == ("x", "y")


def test_absolute_url_keeps_ws_auth_only() -> None:
    r = resolve_listen_url(
        "wss://rec.example.com/in", call_url="ws://h/", call_username="u", call_password="p"
    )
    assert (r.url, r.username) == ("wss://rec.example.com/in", None)
    r = resolve_listen_url("ws://r/in", call_url="ws://h/", ws_username="x", ws_password="")
    assert r.username is None  # call-session.js:1440: both must be non-empty


@given(
    st.sampled_from(["/audio", "/a/b?x=1", "/a?jt_listen=old&y=2", "ws://h:9/p?q=%20"]),
    st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=30),
)
def test_listen_token_round_trip(url: str, token: str) -> None:
    with_token = add_listen_token(url, token)
    target = with_token.split("//", 1)[1].partition("/")[2] if "//" in with_token else with_token
    assert listen_token("/" + target.lstrip("/")) == token
    assert with_token.count(LISTEN_TOKEN_PARAM) == 1


def test_listen_token_absent_or_ambiguous() -> None:
    assert listen_token("/audio") is None
    assert listen_token("/audio?jt_listen=") is None
    assert listen_token("/audio?jt_listen=a&jt_listen=b") is None


# -- the drop-oldest buffer -----------------------------------------------------------------


@given(
    st.lists(st.one_of(st.binary(min_size=1, max_size=700), st.none()), max_size=200), st.integers(1, 2000)
)
def test_buffer_keeps_the_newest_and_counts_the_rest(ops: list[bytes | None], bound: int) -> None:
    buf = ChunkBuffer(bound)
    pushed = popped = 0
    model: list[bytes] = []
    for op in ops:
        if op is None:
            got = buf.pop()
            assert got == (model.pop(0) if model else None)
            popped += len(got or b"")
        else:
            buf.push(op)
            pushed += len(op)
            model.append(op)
            while sum(map(len, model)) > bound and len(model) > 1:
                model.pop(0)
        assert buf.nbytes == sum(map(len, model)) and len(buf) == len(model)
        assert buf.nbytes <= bound or len(buf) == 1  # never more than the bound plus one chunk
    assert pushed == popped + buf.dropped_bytes + buf.nbytes


@given(
    st.lists(st.one_of(st.binary(min_size=1, max_size=700), st.none()), max_size=200), st.integers(1, 2000)
)
def test_buffer_charges_small_chunks_their_overhead(ops: list[bytes | None], bound: int) -> None:
    """With ``min_charge``, a chunk counts as ``max(len, min_charge)`` against the bound (real
    memory within twice the bound, whatever the chunk sizes); the payload still never exceeds
    it, and chunks of at least ``min_charge`` bytes are charged exactly their payload."""
    buf = ChunkBuffer(bound, min_charge=CHUNK_OVERHEAD)
    model: list[bytes] = []

    def charge(chunks: list[bytes]) -> int:
        return sum(max(len(c), CHUNK_OVERHEAD) for c in chunks)

    for op in ops:
        if op is None:
            assert buf.pop() == (model.pop(0) if model else None)
        else:
            buf.push(op)
            model.append(op)
            while charge(model) > bound and len(model) > 1:
                model.pop(0)
        assert buf.nbytes == sum(map(len, model)) and len(buf) == len(model)
        assert charge(model) <= bound or len(buf) == 1
        assert buf.nbytes <= bound or len(buf) == 1


def test_chunk_overhead_covers_what_a_chunk_costs_beyond_its_payload() -> None:
    """CHUNK_OVERHEAD's measure: a ``bytes`` object's own size plus its deque slot (8 bytes),
    rounded up to the allocator's 16 bytes, is within it."""
    own = sys.getsizeof(b"")
    assert (own + 8 + 15) // 16 * 16 <= CHUNK_OVERHEAD


def test_buffer_rejects_a_zero_bound() -> None:
    with pytest.raises(ValueError, match="positive"):
        ChunkBuffer(0)


@given(
    st.lists(st.integers(-32768, 32767), max_size=64)
    | st.lists(st.sampled_from([-1, -256, 255, 0]), max_size=64)
)
def test_streamed_audio_carries_no_sample_the_module_takes_for_a_mark(samples: list[int]) -> None:
    """mod_audio_fork marks a ``mark`` in its playout buffer with the sample 0xFFFF (-1) and,
    while marks are pending, takes every -1 for one (MAF ``lws_glue.cpp:30``, ``:98-101``,
    ``:990-1016``): a -1 in the app's audio was dropped and fired the next mark early. Every
    -1 goes out as -2; every other sample, and the length, stay as they were (the byte pairs
    across two samples, as -256 then 255 make, are not samples)."""
    pcm = array("h", samples).tobytes()
    out = without_marker_samples(pcm)
    assert list(array("h", out)) == [-2 if x == -1 else x for x in samples]
    if -1 not in samples:
        assert out is pcm
