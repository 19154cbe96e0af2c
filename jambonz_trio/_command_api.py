"""The command methods shared by :class:`~jambonz_trio.Call` and the cluster's call proxy.

Each method builds one command model and hands it to ``send_command``, which the class provides
(``Call.send_command`` writes to the call's socket; ``jambonz_trio.cluster.RemoteCall`` sends it
to the member that holds the call). Blocking, errors and timeouts are ``send_command``'s.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from ._protocol import _outbound as cmds
from ._protocol._outbound import Command
from ._protocol._verbs import Config, Dub, Play, Say
from ._protocol._verbs_base import Hook, Verb

__all__ = ["CommandMethods"]


class CommandMethods:
    """One method per jambonz command, each a thin wrapper of :meth:`send_command`."""

    __slots__ = ()

    async def send_command(self, command: Command) -> None:
        """Send ``command`` to the call (see the subclass for what blocks and what it raises)."""
        raise NotImplementedError

    async def redirect(self, verbs: Sequence[Verb], *, queue: bool = False) -> None:
        """Replace the program (``queue=False``, kills the current verb) or append to it."""
        await self.send_command(cmds.RedirectCommand(verbs=tuple(verbs), queue=queue))

    async def redirect_to_hook(
        self, call_hook: Hook | None = None, *, child_call_hook: Hook | None = None
    ) -> None:
        """Make jambonz fetch new programs from hooks (``session:redirect`` follows)."""
        await self.send_command(
            cmds.RedirectToHookCommand(call_hook=call_hook, child_call_hook=child_call_hook)
        )

    async def redirect_legs(
        self,
        *,
        parent_call: Sequence[Verb] | None = None,
        child_call: Sequence[Verb] | None = None,
    ) -> None:
        """Give the parent and/or the dialled child leg new programs."""
        await self.send_command(
            cmds.RedirectLegsCommand(
                parent_call=tuple(parent_call) if parent_call is not None else None,
                child_call=tuple(child_call) if child_call is not None else None,
            )
        )

    async def hangup(self) -> None:
        """Hang up an answered call (``call:status`` ``completed``)."""
        await self.send_command(cmds.CallStatusCommand(call_status="completed"))

    async def reject(self) -> None:
        """End a not-yet-answered call (``call:status`` ``no-answer``: SIP 503 / CANCEL)."""
        await self.send_command(cmds.CallStatusCommand(call_status="no-answer"))

    async def mute(self, *, call_sid: str | None = None) -> None:
        """Mute a leg during ``dial`` / ``conference``."""
        await self.send_command(cmds.MuteStatusCommand(mute_status="mute", call_sid=call_sid))

    async def unmute(self, *, call_sid: str | None = None) -> None:
        """Unmute a leg during ``dial`` / ``conference``."""
        await self.send_command(cmds.MuteStatusCommand(mute_status="unmute", call_sid=call_sid))

    async def conference_mute(self, status: Literal["mute", "unmute"]) -> None:
        """Mute or unmute every non-moderator of the conference."""
        await self.send_command(cmds.ConfMuteStatusCommand(conf_mute_status=status))

    async def conference_hold(
        self, status: Literal["hold", "unhold"], *, wait_hook: str | None = None
    ) -> None:
        """Hold (mute and deafen) or unhold this conference member."""
        await self.send_command(cmds.ConfHoldStatusCommand(conf_hold_status=status, wait_hook=wait_hook))

    async def conference_participant(
        self,
        action: cmds.ParticipantAction,
        *,
        tag: str | None = None,
        wait_hook: str | None = None,
    ) -> None:
        """Act on this conference member (tag, coach, hold, mute, kick...)."""
        await self.send_command(
            cmds.ConfParticipantActionCommand(action=action, tag=tag, wait_hook=wait_hook)
        )

    async def listen_status(self, status: Literal["pause", "resume"]) -> None:
        """Pause or resume the running ``listen`` verb."""
        await self.send_command(cmds.ListenStatusCommand(listen_status=status))

    async def stream_status(self, status: Literal["pause", "resume"]) -> None:
        """Pause or resume the running ``stream`` verb."""
        await self.send_command(cmds.StreamStatusCommand(stream_status=status))

    async def transcribe_status(self, status: Literal["pause", "resume"]) -> None:
        """Pause or resume transcription."""
        await self.send_command(cmds.TranscribeStatusCommand(transcribe_status=status))

    async def whisper(self, verbs: Sequence[Say | Play], *, call_sid: str | None = None) -> None:
        """Play ``Say``/``Play`` verbs to one leg during ``dial`` or ``listen``."""
        await self.send_command(cmds.WhisperCommand(verbs=tuple(verbs), call_sid=call_sid))

    async def sip_request(
        self,
        method: str,
        *,
        content_type: str | None = None,
        content: str | None = None,
        headers: dict[str, str] | None = None,
        call_sid: str | None = None,
    ) -> None:
        """Send an in-dialog SIP request (INFO, MESSAGE, NOTIFY...)."""
        await self.send_command(
            cmds.SipRequestCommand(
                method=method,
                content_type=content_type,
                content=content,
                headers=headers,
                call_sid=call_sid,
            )
        )

    async def send_dtmf(
        self, digit: str, *, duration: int | None = None, call_sid: str | None = None
    ) -> None:
        """Send a DTMF digit to the caller (or ``call_sid``'s leg) as SIP INFO."""
        await self.send_command(cmds.DtmfCommand(digit=digit, duration=duration, call_sid=call_sid))

    async def record(
        self,
        action: cmds.RecordAction,
        *,
        type: Literal["cloud", "siprec"] | None = None,
        recording_id: str | None = None,
        siprec_server_url: str | None = None,
        headers: Mapping[str, str] | None = None,
        silence: bool | None = None,
    ) -> None:
        """Start / stop / pause / resume SIPREC (default) or ``cloud`` recording; the options
        are :class:`~jambonz_trio.commands.RecordCommand`'s."""
        await self.send_command(
            cmds.RecordCommand(
                action=action,
                type=type,
                recording_id=recording_id,
                siprec_server_url=siprec_server_url,
                headers=headers,
                silence=silence,
            )
        )

    async def configure(self, config: Config) -> None:
        """Run a ``config`` verb now, out of band."""
        await self.send_command(cmds.ConfigCommand(config=config))

    async def create_call(self, body: Mapping[str, Any]) -> None:
        """Launch a *separate* outbound call (the ``dial`` command, a REST ``createCall``
        body: ``from``, ``to`` target object, ``call_hook``...). To bridge this call to
        someone, use the ``Dial`` verb instead."""
        await self.send_command(cmds.DialCommand(body=body))

    async def dial(self, body: Mapping[str, Any]) -> None:
        """Deprecated: :meth:`create_call` (this never dialled from this call: it starts a
        separate one, unlike the ``Dial`` verb)."""
        warnings.warn("dial(body) is deprecated; use create_call(body)", DeprecationWarning, stacklevel=2)
        await self.create_call(body)

    async def dub(self, dub: Dub, *, call_sid: str | None = None) -> None:
        """Run a ``dub`` verb now (add, silence or play on an extra audio track)."""
        await self.send_command(cmds.DubCommand(dub=dub, call_sid=call_sid))

    async def boost_audio(self, gain: float | str, *, call_sid: str | None = None) -> None:
        """Set the audio gain in dB (a number, or a string such as ``"+6 dB"``)."""
        await self.send_command(cmds.BoostAudioCommand(gain=gain, call_sid=call_sid))

    async def media_path(self, path: Literal["no-media", "partial-media", "full-media"]) -> None:
        """During ``dial``: release the media (``no-media``) or re-anchor it."""
        await self.send_command(cmds.MediaPathCommand(path=path))

    async def llm_tool_output(self, tool_call_id: str, data: dict[str, Any]) -> None:
        """Answer an ``llm:tool-call`` (``data`` is the vendor's shape, protocol.md §9.5)."""
        await self.send_command(cmds.LlmToolOutputCommand(tool_call_id=tool_call_id, data=data))

    async def llm_update(self, data: dict[str, Any]) -> None:
        """Send a vendor-specific update to the running ``llm`` verb."""
        await self.send_command(cmds.LlmUpdateCommand(data=data))

    async def tts_flush(self) -> None:
        """Synthesise the buffered TTS text now (end of an LLM turn)."""
        await self.send_command(cmds.TtsFlushCommand())

    async def tts_clear(self) -> None:
        """Drop buffered TTS text and queued audio, and release a paused token stream."""
        await self.send_command(cmds.TtsClearCommand())
