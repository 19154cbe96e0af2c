"""Typed models for every verb feature-server 0.9.8 accepts, and their nested objects.

Wire names and requirements follow @jambonz/verb-specifications 0.1.13 (``specs.json``), the
validator the feature server runs on every verb list (see ``shared/protocol.md`` §8). Python
names are snake_case; the converter writes camelCase unless a field says otherwise.

A few verbs embed another verb's options (``gather.say``, ``dial.dub``, ``conference.listen``,
...). Those fields take the verb classes themselves and are written without the ``"verb"`` key,
because jambonz validates them as bare property objects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, TypeVar

import attrs

from ._verbs_base import Hook, Verb, nested, verb
from ._wire import WIRE, converter

__all__ = [
    "ALL_VERB_CLASSES",
    "ActionHookDelayAction",
    "Alert",
    "Amd",
    "AmdTimers",
    "Answer",
    "AssemblyAiOptions",
    "Auth",
    "AwsOptions",
    "AzureOptions",
    "BargeIn",
    "BidirectionalAudio",
    "CobaltOptions",
    "Conference",
    "ConferenceRecord",
    "Config",
    "CustomOptions",
    "DeepgramOptions",
    "Dequeue",
    "Dial",
    "DialFrom",
    "Dialogflow",
    "Dtmf",
    "Dub",
    "ElevenlabsOptions",
    "Enqueue",
    "FillerNoise",
    "Gather",
    "GoogleOptions",
    "Hangup",
    "HoundifyOptions",
    "IbmOptions",
    "Leave",
    "Lex",
    "LexIntent",
    "Listen",
    "ListenOptions",
    "Llm",
    "McpServer",
    "Message",
    "NoiseIsolation",
    "NuanceFormatting",
    "NuanceOptions",
    "NuanceResource",
    "NuanceResourceReference",
    "NvidiaOptions",
    "OpenaiOptions",
    "Pause",
    "Play",
    "PromptTemplates",
    "QueryInput",
    "Rasa",
    "Recognizer",
    "RecordOptions",
    "Redirect",
    "RestDial",
    "Say",
    "SipDecline",
    "SipRefer",
    "SipRequest",
    "SmAudioFilteringConfig",
    "SmConversationConfig",
    "SmPunctuationOverrides",
    "SmSpeakerDiarizationConfig",
    "SmTranscriptFilteringConfig",
    "SmTranscriptionConfig",
    "SmTranslationConfig",
    "SonioxOptions",
    "SonioxStorage",
    "SpeechmaticsOptions",
    "Synthesizer",
    "Tag",
    "Target",
    "Transcribe",
    "TranscribeOptions",
    "TtsStream",
    "TurnDetection",
    "TurnTaking",
    "Vad",
    "VerbioOptions",
]

_V = TypeVar("_V", bound=Verb)


def _embeds_verbs(*wire_names: str) -> Callable[[type[_V]], type[_V]]:
    """Class decorator (outermost): write the verb-typed fields ``wire_names`` without "verb".

    specs.json types such fields as another verb's property set (``"#say"``, ``["#dub"]``), and
    the validator rejects a ``verb`` key inside them as an unknown property.
    """

    def register(cls: type[_V]) -> type[_V]:
        outer = converter.get_unstructure_hook(cls)

        def unstructure(v: Any) -> dict[str, Any]:
            out: dict[str, Any] = outer(v)
            for name in wire_names:
                value = out.get(name)
                for item in value if isinstance(value, list) else [value]:
                    if isinstance(item, dict):
                        item.pop("verb", None)
            return out

        converter.register_unstructure_hook(cls, unstructure)
        return cls

    return register


# -- nested objects -----------------------------------------------------------------------------


@nested()
@attrs.frozen(kw_only=True)
class Synthesizer:
    """Text-to-speech settings (``synthesizer`` object)."""

    vendor: str
    label: str | None = None
    language: str | None = None
    voice: str | dict[str, Any] | None = None
    fallback_vendor: str | None = None
    fallback_label: str | None = None
    fallback_language: str | None = None
    fallback_voice: str | dict[str, Any] | None = None
    engine: Literal["standard", "neural", "generative", "long-form"] | None = None
    gender: Literal["MALE", "FEMALE", "NEUTRAL"] | None = None
    options: dict[str, Any] | None = None


@nested()
@attrs.frozen(kw_only=True)
class Vad:
    """Voice-activity detection in front of the recognizer (``vad`` object)."""

    enable: bool | None = None
    voice_ms: int | None = None
    silence_ms: int | None = None
    strategy: str | None = None
    mode: int | None = None
    vendor: Literal["webrtc", "silero"] | None = None
    threshold: float | None = None
    speech_pad_ms: int | None = None


@nested()
@attrs.frozen(kw_only=True)
class NuanceResourceReference:
    """A Nuance resource (wordset, grammar, domain LM...) loaded by URI (``resourceReference``)."""

    type: (
        Literal[
            "undefined_resource_type",
            "wordset",
            "compiled_wordset",
            "domain_lm",
            "speaker_profile",
            "grammar",
            "settings",
        ]
        | None
    ) = None
    uri: str | None = None
    max_load_failures: bool | None = None
    request_timeout_ms: int | None = None
    headers: dict[str, str] | None = None


@nested()
@attrs.frozen(kw_only=True)
class NuanceResource:
    """One recognition resource for Nuance: inline or external, with its weight (``resource``)."""

    external_reference: NuanceResourceReference | None = None
    inline_wordset: str | None = None
    builtin: str | None = None
    inline_grammar: str | None = None
    wakeup_word: list[str] | None = None
    weight_name: Literal["defaultWeight", "lowest", "low", "medium", "high", "highest"] | None = None
    weight_value: float | None = None
    reuse: Literal["undefined_reuse", "low_reuse", "high_reuse"] | None = None


@nested()
@attrs.frozen(kw_only=True)
class NuanceFormatting:
    """Nuance output formatting scheme and its options (``formatting``)."""

    scheme: str
    options: dict[str, Any]


@nested()
@attrs.frozen(kw_only=True)
class NuanceOptions:
    """Nuance Krypton recognizer options (``nuanceOptions``)."""

    client_id: str | None = None
    secret: str | None = attrs.field(default=None, repr=False)
    krypton_endpoint: str | None = None
    topic: str | None = None
    utterance_detection_mode: Literal["single", "multiple", "disabled"] | None = None
    punctuation: bool | None = None
    profanity_filter: bool | None = None
    include_tokenization: bool | None = None
    discard_speaker_adaptation: bool | None = None
    suppress_call_recording: bool | None = None
    mask_load_failures: bool | None = None
    suppress_initial_capitalization: bool | None = None
    allow_zero_base_lm_weight: bool | None = None
    filter_wakeup_word: bool | None = None
    result_type: Literal["final", "partial", "immutable_partial"] | None = None
    no_input_timeout_ms: int | None = None
    recognition_timeout_ms: int | None = None
    utterance_end_silence_ms: int | None = None
    max_hypotheses: int | None = None
    speech_domain: str | None = None
    formatting: NuanceFormatting | None = None
    client_data: dict[str, Any] | None = None
    user_id: str | None = None
    speech_detection_sensitivity: float | None = None
    resources: list[NuanceResource] | None = None


@nested()
@attrs.frozen(kw_only=True)
class DeepgramOptions:
    """Deepgram recognizer options (``deepgramOptions``)."""

    deepgram_stt_uri: str | None = None
    deepgram_stt_use_tls: bool | None = None
    api_key: str | None = attrs.field(default=None, repr=False)
    tier: str | None = None
    model: str | None = None
    custom_model: str | None = None
    version: str | None = None
    punctuate: bool | None = None
    smart_formatting: bool | None = None
    no_delay: bool | None = None
    profanity_filter: bool | None = None
    redact: Literal["pci", "numbers", "true", "ssn"] | None = None
    diarize: bool | None = None
    diarize_version: str | None = None
    ner: bool | None = None
    multichannel: bool | None = None
    alternatives: int | None = None
    numerals: bool | None = None
    search: list[str] | None = None
    replace: list[Any] | None = None
    keywords: list[str] | None = None
    keyterms: list[str] | None = None
    endpointing: bool | int | None = None
    utterance_end_ms: int | None = None
    short_utterance: bool | None = None
    vad_turnoff: int | None = None
    tag: str | None = None
    filler_words: bool | None = None
    eot_threshold: float | None = None
    eot_timeout_ms: int | None = None
    mip_opt_out: bool | None = None
    entity_prompt: str | None = None
    eager_eot_threshold: float | None = None
    language_hints: list[str] | None = None


@nested()
@attrs.frozen(kw_only=True)
class IbmOptions:
    """IBM Watson speech options (``ibmOptions``)."""

    stt_api_key: str | None = attrs.field(default=None, repr=False)
    stt_region: str | None = None
    tts_api_key: str | None = attrs.field(default=None, repr=False)
    tts_region: str | None = None
    instance_id: str | None = None
    model: str | None = None
    language_customization_id: str | None = None
    acoustic_customization_id: str | None = None
    base_model_version: str | None = None
    watson_metadata: str | None = None
    watson_learning_opt_out: bool | None = None


@nested()
@attrs.frozen(kw_only=True)
class NvidiaOptions:
    """NVIDIA Riva recognizer options (``nvidiaOptions``)."""

    riva_uri: str | None = None
    max_alternatives: int | None = None
    profanity_filter: bool | None = None
    punctuation: bool | None = None
    word_time_offsets: bool | None = None
    verbatim_transcripts: bool | None = None
    custom_configuration: dict[str, Any] | None = None


@nested()
@attrs.frozen(kw_only=True)
class SonioxStorage:
    """How Soniox stores the audio and transcript of a call (``sonioxStorage``)."""

    id: str | None = None
    title: str | None = None
    disable_store_audio: bool | None = None
    disable_store_transcript: bool | None = None
    disable_search: bool | None = None
    metadata: dict[str, Any] | None = None


@nested()
@attrs.frozen(kw_only=True)
class SonioxOptions:
    """Soniox recognizer options (``sonioxOptions``)."""

    api_key: str | None = attrs.field(default=None, repr=False)
    model: str | None = None
    endpoint_detection: bool | None = None
    profanity_filter: bool | None = None
    speech_context: str | None = None
    client_request_reference: str | None = None
    storage: SonioxStorage | None = None


@nested()
@attrs.frozen(kw_only=True)
class CobaltOptions:
    """Cobalt recognizer options (``cobaltOptions``)."""

    server_uri: str | None = None
    enable_confusion_network: bool | None = None
    metadata: str | None = None
    compiled_context_data: str | None = None
    word_time_offsets: bool | None = None
    context_token: str | None = None


@nested()
@attrs.frozen(kw_only=True)
class AwsOptions:
    """Amazon Transcribe options and credentials (``awsOptions``)."""

    access_key: str | None = attrs.field(default=None, repr=False)
    secret_key: str | None = attrs.field(default=None, repr=False)
    security_token: str | None = attrs.field(default=None, repr=False)
    region: str | None = None
    vocabulary_name: str | None = None
    vocabulary_filter_name: str | None = None
    vocabulary_filter_method: Literal["remove", "mask", "tag"] | None = None
    language_model_name: str | None = None
    pii_entity_types: list[str] | None = None
    pii_identify_entities: bool | None = None


@nested()
@attrs.frozen(kw_only=True)
class AzureOptions:
    """Microsoft Azure speech recognizer options (``azureOptions``)."""

    speech_segmentation_silence_timeout_ms: int | None = None
    post_processing: str | None = None
    audio_logging: bool | None = None
    language_id_mode: Literal["AtStart", "Continuous"] | None = None
    speech_recognition_mode: Literal["CONVERSATION", "DICTATION", "INTERACTIVE"] | None = None


@nested()
@attrs.frozen(kw_only=True)
class AssemblyAiOptions:
    """AssemblyAI recognizer options (``assemblyAiOptions``)."""

    api_key: str | None = attrs.field(default=None, repr=False)
    service_version: Literal["v2", "v3"] | None = None
    speech_model: str | None = None
    format_turns: bool | None = None
    end_of_turn_confidence_threshold: float | None = None
    min_end_of_turn_silence_when_confident: int | None = None
    max_turn_silence: int | None = None
    min_turn_silence: int | None = None
    keyterms: list[str] | None = None
    prompt: str | None = None
    language_detection: bool | None = None
    vad_threshold: float | None = None
    inactivity_timeout: float | None = None


@nested()
@attrs.frozen(kw_only=True)
class GoogleOptions:
    """Google Speech recognizer options (``googleOptions``)."""

    service_version: Literal["v1", "v2"] | None = None
    recognizer_id: str | None = None
    speech_start_timeout_ms: int | None = None
    speech_end_timeout_ms: int | None = None
    enable_voice_activity_events: bool | None = None
    transcript_normalization: list[Any] | None = None
    parent_path: str | None = None


@nested()
@attrs.frozen(kw_only=True)
class CustomOptions:
    """Options of a custom (self-hosted) speech vendor (``customOptions``)."""

    auth_token: str | None = attrs.field(default=None, repr=False)
    uri: str | None = None
    sample_rate: int | None = None
    options: dict[str, Any] | None = None


@nested("snake")
@attrs.frozen(kw_only=True)
class VerbioOptions:
    """Verbio recognizer options (``verbioOptions``); snake_case on the wire."""

    enable_formatting: bool | None = None
    enable_diarization: bool | None = None
    topic: int | None = None
    inline_grammar: str | None = None
    grammar_uri: str | None = None
    label: str | None = None
    recognition_timeout: float | None = None
    speech_complete_timeout: float | None = None
    speech_incomplete_timeout: float | None = None


@nested("snake")
@attrs.frozen(kw_only=True)
class SmSpeakerDiarizationConfig:
    """Speechmatics speaker-diarization tuning (``sm_speakerDiarizationConfig``)."""

    speaker_sensitivity: float | None = None
    max_speakers: int | None = None


@nested("snake")
@attrs.frozen(kw_only=True)
class SmConversationConfig:
    """Speechmatics end-of-utterance detection (``sm_conversationConfig``)."""

    end_of_utterance_silence_trigger: float | None = None


@nested("snake")
@attrs.frozen(kw_only=True)
class SmPunctuationOverrides:
    """Which punctuation Speechmatics may emit, and how eagerly (``sm_puctuationOverrides``)."""

    permitted_marks: list[str] | None = None
    sensitivity: float | None = None


@nested("snake")
@attrs.frozen(kw_only=True)
class SmAudioFilteringConfig:
    """Speechmatics filtering of quiet audio (``sm_audioFilteringConfig``)."""

    volume_threshold: float


@nested("snake")
@attrs.frozen(kw_only=True)
class SmTranscriptFilteringConfig:
    """Speechmatics removal of disfluencies (``sm_transcriptFilteringConfig``)."""

    remove_disfluencies: bool


@nested("snake")
@attrs.frozen(kw_only=True)
class SmTranscriptionConfig:
    """Speechmatics transcription settings (``sm_transcriptionConfig``)."""

    language: str | None = None
    domain: str | None = None
    additional_vocab: list[Any] | None = None
    diarization: str | None = None
    speaker_diarization_config: SmSpeakerDiarizationConfig | None = None
    conversation_config: SmConversationConfig | None = None
    enable_partials: bool | None = None
    max_delay: float | None = None
    max_delay_mode: Literal["fixed", "flexible"] | None = None
    output_locale: str | None = None
    punctuation_overrides: SmPunctuationOverrides | None = None
    operating_point: str | None = None
    enable_entities: bool | None = None
    audio_filtering_config: SmAudioFilteringConfig | None = None
    transcript_filtering_config: SmTranscriptFilteringConfig | None = None


@nested("snake")
@attrs.frozen(kw_only=True)
class SmTranslationConfig:
    """Speechmatics real-time translation targets (``sm_translationConfig``)."""

    target_languages: list[str]
    enable_partials: bool | None = None


@nested("snake")
@attrs.frozen(kw_only=True)
class SpeechmaticsOptions:
    """Speechmatics recognizer options (``speechmaticsOptions``).

    ``audio_events_config_config`` is not modelled: its only property (``types``) is declared
    with an ``array`` enum the validator cannot check, so any value is rejected.
    """

    host: str | None = None
    profile: Literal["adaptive", "agile", "smart", "external"] | None = None
    transcription_config: SmTranscriptionConfig | None = None
    translation_config: SmTranslationConfig | None = None


@nested()
@attrs.frozen(kw_only=True)
class PromptTemplates:
    """Templates OpenAI transcription builds its prompt from (``promptTemplates``)."""

    hints_template: str | None = None
    conversation_history_template: str | None = None


@nested("snake")
@attrs.frozen(kw_only=True)
class TurnDetection:
    """OpenAI turn detection for transcription (``turnDetection``)."""

    type: Literal["none", "server_vad", "semantic_vad"]
    eagerness: Literal["low", "medium", "high", "auto"] | None = None
    threshold: float | None = None
    prefix_padding_ms: int | None = None
    silence_duration_ms: int | None = None


@nested()
@attrs.frozen(kw_only=True)
class OpenaiOptions:
    """OpenAI transcription options (``openaiOptions``)."""

    api_key: str | None = attrs.field(default=None, repr=False)
    model: str | None = None
    prompt: str | None = None
    prompt_templates: PromptTemplates | None = None
    language: str | None = None
    input_audio_noise_reduction: Literal["near_field", "far_field"] | None = attrs.field(
        default=None, metadata={WIRE: "input_audio_noise_reduction"}
    )
    turn_detection: TurnDetection | None = attrs.field(default=None, metadata={WIRE: "turn_detection"})


@nested()
@attrs.frozen(kw_only=True)
class HoundifyOptions:
    """Houndify recognizer options (``houndifyOptions``)."""

    request_info: dict[str, Any] | None = None
    sample_rate: int | None = None
    latitude: float | None = None
    longitude: float | None = None
    city: str | None = None
    state: str | None = None
    country: str | None = None
    time_zone: str | None = None
    domain: str | None = None
    audio_endpoint: str | None = None
    max_silence_seconds: float | None = None
    max_silence_after_full_query_seconds: float | None = None
    max_silence_after_partial_query_seconds: float | None = None
    vad_sensitivity: float | None = None
    vad_timeout: float | None = None
    vad_mode: str | None = None
    vad_voice_ms: int | None = None
    vad_silence_ms: int | None = None
    vad_debug: bool | None = None
    audio_format: str | None = None
    enable_noise_reduction: bool | None = None
    enable_profanity_filter: bool | None = None
    enable_punctuation: bool | None = None
    enable_capitalization: bool | None = None
    confidence_threshold: float | None = None
    enable_disfluency_filter: bool | None = None
    max_results: int | None = None
    enable_word_timestamps: bool | None = None
    max_alternatives: int | None = None
    partial_transcript_interval: float | None = None
    session_timeout: float | None = None
    connection_timeout: float | None = None
    custom_vocabulary: list[Any] | None = None
    language_model: str | None = None
    audio_query_absolute_timeout: float | None = None


@nested()
@attrs.frozen(kw_only=True)
class ElevenlabsOptions:
    """ElevenLabs recognizer options (``elevenlabsOptions``)."""

    include_timestamps: bool | None = None
    commit_strategy: Literal["manual", "vad"] | None = None
    vad_silence_threshold_secs: float | None = None
    vad_threshold: float | None = None
    min_speech_duration_ms: int | None = None
    min_silence_duration_ms: int | None = None
    enable_logging: bool | None = None


@nested()
@attrs.frozen(kw_only=True)
class Recognizer:
    """Speech-to-text settings (``recognizer`` object).

    ``gladia_options`` is a pass-through ``dict[str, Any]`` (specs.json types it as a bare
    object), hidden from ``repr`` as it may carry an API key.
    """

    vendor: str
    label: str | None = None
    language: str | None = None
    fallback_vendor: str | None = None
    fallback_label: str | None = None
    fallback_language: str | None = None
    vad: Vad | None = None
    autogenerate_prompt: bool | None = None
    hints: list[str] | None = None
    hints_boost: float | None = None
    alt_languages: list[str] | None = None
    profanity_filter: bool | None = None
    interim: bool | None = None
    single_utterance: bool | None = None
    dual_channel: bool | None = None
    separate_recognition_per_channel: bool | None = None
    punctuation: bool | None = None
    enhanced_model: bool | None = None
    words: bool | None = None
    diarization: bool | None = None
    diarization_min_speakers: int | None = None
    diarization_max_speakers: int | None = None
    interaction_type: (
        Literal[
            "unspecified",
            "discussion",
            "presentation",
            "phone_call",
            "voicemail",
            "voice_search",
            "voice_command",
            "dictation",
        ]
        | None
    ) = None
    naics_code: int | None = None
    identify_channels: bool | None = None
    vocabulary_name: str | None = None
    vocabulary_filter_name: str | None = None
    filter_method: Literal["remove", "mask", "tag"] | None = None
    model: str | None = None
    output_format: Literal["simple", "detailed"] | None = None
    profanity_option: Literal["masked", "removed", "raw"] | None = None
    request_snr: bool | None = None
    initial_speech_timeout_ms: int | None = None
    azure_service_endpoint: str | None = None
    azure_stt_endpoint_id: str | None = None
    asr_dtmf_termination_digit: str | None = None
    asr_timeout: float | None = None
    fast_recognition_timeout: float | None = None
    min_confidence: float | None = None
    nuance_options: NuanceOptions | None = None
    deepgram_options: DeepgramOptions | None = None
    ibm_options: IbmOptions | None = None
    nvidia_options: NvidiaOptions | None = None
    soniox_options: SonioxOptions | None = None
    cobalt_options: CobaltOptions | None = None
    aws_options: AwsOptions | None = None
    azure_options: AzureOptions | None = None
    assembly_ai_options: AssemblyAiOptions | None = None
    google_options: GoogleOptions | None = None
    custom_options: CustomOptions | None = None
    verbio_options: VerbioOptions | None = None
    speechmatics_options: SpeechmaticsOptions | None = None
    openai_options: OpenaiOptions | None = None
    houndify_options: HoundifyOptions | None = None
    gladia_options: dict[str, Any] | None = attrs.field(default=None, repr=False)
    elevenlabs_options: ElevenlabsOptions | None = None


@nested()
@attrs.frozen(kw_only=True)
class Auth:
    """Basic-auth credentials (``auth`` object): for a SIP target or an audio WebSocket."""

    username: str
    password: str = attrs.field(repr=False)


@nested()
@attrs.frozen(kw_only=True)
class DialFrom:
    """Overrides the user and host of the ``From`` header of an outbound leg (``dialFrom``)."""

    user: str | None = None
    host: str | None = None


@nested()
@attrs.frozen(kw_only=True)
class Target:
    """One party to ring: a phone number, SIP URI, registered user or Teams user (``target``)."""

    type: Literal["phone", "sip", "user", "teams"]
    confirm_hook: Hook | None = None
    method: Literal["GET", "POST"] | None = None
    headers: dict[str, str] | None = None
    from_: DialFrom | None = None
    name: str | None = None
    number: str | None = None
    sip_uri: str | None = None
    auth: Auth | None = None
    vmail: bool | None = None
    tenant: str | None = None
    trunk: str | None = None
    override_to: str | None = None
    proxy: str | None = None


@nested()
@attrs.frozen(kw_only=True)
class AmdTimers:
    """Timeouts, in milliseconds, of answering-machine detection (``amdTimers``)."""

    no_speech_timeout_ms: int | None = None
    decision_timeout_ms: int | None = None
    tone_timeout_ms: int | None = None
    greeting_completion_timeout_ms: int | None = None


@nested()
@attrs.frozen(kw_only=True)
class Amd:
    """Answering-machine detection, reporting its findings to ``action_hook`` (``amd``)."""

    action_hook: Hook
    threshold_word_count: int | None = None
    digit_count: int | None = None
    timers: AmdTimers | None = None
    recognizer: Recognizer | None = None


@nested()
@attrs.frozen(kw_only=True)
class BargeIn:
    """Background speech/DTMF collection that interrupts prompts (config ``bargeIn``)."""

    enable: bool
    sticky: bool | None = None
    action_hook: Hook | None = None
    partial_result_hook: Hook | None = None
    input: list[str] | None = None
    finish_on_key: str | None = None
    num_digits: int | None = None
    min_digits: int | None = None
    max_digits: int | None = None
    inter_digit_timeout: float | None = None
    dtmf_bargein: bool | None = None
    min_bargein_word_count: int | None = None


@nested()
@attrs.frozen(kw_only=True)
class TtsStream:
    """Turns streamed text-to-speech on or off for the session (config ``ttsStream``)."""

    enable: bool
    synthesizer: Synthesizer | None = None


@nested()
@attrs.frozen(kw_only=True)
class BidirectionalAudio:
    """Whether, and how, audio may be sent back over a listen socket (``bidirectionalAudio``)."""

    enabled: bool | None = None
    streaming: bool | None = None
    sample_rate: int | None = None


@nested()
@attrs.frozen(kw_only=True)
class ListenOptions:
    """Starts or stops background audio streaming for the session (config ``listen``)."""

    enable: bool
    url: str | None = None
    sample_rate: int | None = None
    ws_auth: Auth | None = None
    mix_type: Literal["mono", "stereo", "mixed"] | None = None
    metadata: dict[str, Any] | None = None
    max_length: int | None = None
    pass_dtmf: bool | None = None
    play_beep: bool | None = None
    disable_bidirectional_audio: bool | None = None
    bidirectional_audio: BidirectionalAudio | None = None
    timeout: float | None = None


@nested()
@attrs.frozen(kw_only=True)
class TranscribeOptions:
    """Starts or stops background transcription for the session (config ``transcribe``)."""

    enable: bool
    transcription_hook: str | None = None
    recognizer: Recognizer | None = None


@nested()
@attrs.frozen(kw_only=True)
class RecordOptions:
    """Starts, stops, pauses or resumes call recording (config ``record``)."""

    action: Literal["startCallRecording", "stopCallRecording", "pauseCallRecording", "resumeCallRecording"]
    type: Literal["cloud", "siprec"] | None = None
    recording_id: str | None = attrs.field(default=None, metadata={WIRE: "recordingID"})
    siprec_server_url: str | list[str] | None = attrs.field(default=None, metadata={WIRE: "siprecServerURL"})
    headers: dict[str, str] | None = None


@nested()
@attrs.frozen(kw_only=True)
class FillerNoise:
    """Background audio played while the app is working out its answer (``fillerNoise``)."""

    enable: bool
    url: str | None = None
    start_delay_secs: float | None = None


@nested()
@attrs.frozen(kw_only=True)
class ActionHookDelayAction:
    """What to do while an action hook is slow to answer (``actionHookDelayAction``).

    ``actions`` and ``give_up_actions`` are verb lists; they are pass-through ``list[Any]``:
    give wire dicts (e.g. from ``unstructure_verbs``) or verb models (written with ``"verb"``).
    """

    enabled: bool | None = None
    no_response_timeout: float | None = None
    no_response_give_up_timeout: float | None = None
    retries: int | None = None
    actions: list[Any] | None = None
    give_up_actions: list[Any] | None = None


@nested()
@attrs.frozen(kw_only=True)
class NoiseIsolation:
    """Noise suppression on the caller's audio (``noiseIsolation``)."""

    enable: bool | None = None
    vendor: str | None = None
    level: float | None = None
    model: str | None = None


@nested()
@attrs.frozen(kw_only=True)
class TurnTaking:
    """End-of-turn detection settings (``turnTaking``)."""

    enable: bool | None = None
    vendor: str | None = None
    threshold: float | None = None
    model: str | None = None


@nested()
@attrs.frozen(kw_only=True)
class McpServer:
    """An MCP server whose tools the LLM may call (``mcpServer``).

    ``auth`` is a pass-through ``dict[str, Any]`` (hidden from ``repr``). specs.json also lists
    ``roots`` as an array of ``#root``, a type it never defines, so every non-empty value is
    rejected by the validator: it is deliberately not modelled.
    """

    url: str
    auth: dict[str, Any] | None = attrs.field(default=None, repr=False)


@nested()
@attrs.frozen(kw_only=True)
class LexIntent:
    """The Lex intent to start the conversation with, and its slots (``lexIntent``)."""

    name: str
    slots: dict[str, Any] | None = None


@nested()
@attrs.frozen(kw_only=True)
class QueryInput:
    """The first input sent to a Dialogflow agent instead of waiting for speech."""

    text: str | None = None
    intent: str | None = None
    event: str | None = None
    dtmf: str | None = None


@nested()
@attrs.frozen(kw_only=True)
class ConferenceRecord:
    """Recording settings of a conference (specs.json ``record``)."""

    path: str


# -- verbs, in the order their classes are needed ---------------------------------------------


@verb("say")
@attrs.frozen(kw_only=True)
class Say(Verb):
    """Speak text (``say``). ``text`` may be a list: jambonz picks one at random."""

    text: str | list[str] | None = None
    instructions: str | None = None
    stream: bool | None = None
    loop: int | str | None = None
    synthesizer: Synthesizer | None = None
    early_media: bool | None = None
    disable_tts_cache: bool | None = None
    close_stream_on_empty: bool | None = None


@verb("play")
@attrs.frozen(kw_only=True)
class Play(Verb):
    """Play one audio file, or several in turn, from URLs (``play``)."""

    url: str | list[str]
    loop: int | str | None = None
    early_media: bool | None = None
    seek_offset: int | str | None = None
    timeout_secs: float | str | None = None
    action_hook: Hook | None = None


@verb("transcribe")
@attrs.frozen(kw_only=True)
class Transcribe(Verb):
    """Transcribe the call in the background, posting transcripts to a hook (``transcribe``)."""

    transcription_hook: str | None = None
    translation_hook: str | None = None
    recognizer: Recognizer | None = None
    early_media: bool | None = None
    channel: int | None = None


@_embeds_verbs("transcribe")
@verb("listen")
@attrs.frozen(kw_only=True)
class Listen(Verb):
    """Stream the call's audio to a WebSocket server (``listen``, alias ``stream``)."""

    url: str
    action_hook: Hook | None = None
    auth: Auth | None = None
    finish_on_key: str | None = None
    max_length: int | None = None
    metadata: dict[str, Any] | None = None
    mix_type: Literal["mono", "stereo", "mixed"] | None = None
    pass_dtmf: bool | None = None
    play_beep: bool | None = None
    disable_bidirectional_audio: bool | None = None
    bidirectional_audio: BidirectionalAudio | None = None
    sample_rate: int | None = None
    timeout: float | None = None
    transcribe: Transcribe | None = None
    ws_auth: Auth | None = None
    early_media: bool | None = None
    channel: int | None = None


@verb("dub")
@attrs.frozen(kw_only=True)
class Dub(Verb):
    """Add, remove, silence or feed an extra audio track mixed into the call (``dub``).

    ``say`` is text to speak, or a pass-through ``dict[str, Any]`` of say options.
    """

    action: Literal["addTrack", "removeTrack", "silenceTrack", "playOnTrack", "sayOnTrack"]
    track: str
    play: str | None = None
    say: str | dict[str, Any] | None = None
    loop: bool | None = None
    gain: float | str | None = None


@verb("alert")
@attrs.frozen(kw_only=True)
class Alert(Verb):
    """Send a 180 Ringing with an ``Alert-Info`` header before answering (``alert``)."""

    message: str


@verb("answer")
@attrs.frozen(kw_only=True)
class Answer(Verb):
    """Answer the call without doing anything else (``answer``)."""


@_embeds_verbs("listen")
@verb("conference")
@attrs.frozen(kw_only=True)
class Conference(Verb):
    """Put the caller into a named multi-party conference (``conference``)."""

    name: str
    beep: bool | None = None
    member_tag: str | None = None
    speak_only_to: str | None = None
    start_conference_on_enter: bool | None = None
    end_conference_on_exit: bool | None = None
    end_conference_duration: int | None = None
    max_participants: int | None = None
    join_muted: bool | None = None
    action_hook: Hook | None = None
    wait_hook: Hook | None = None
    status_events: list[str] | None = None
    status_hook: Hook | None = None
    enter_hook: Hook | None = None
    record: ConferenceRecord | None = None
    listen: Listen | None = None
    distribute_dtmf: bool | None = None


@verb("config")
@attrs.frozen(kw_only=True)
class Config(Verb):
    """Change session-wide defaults: speech vendors, barge-in, background tasks (``config``)."""

    synthesizer: Synthesizer | None = None
    recognizer: Recognizer | None = None
    barge_in: BargeIn | None = None
    tts_stream: TtsStream | None = None
    record: RecordOptions | None = None
    listen: ListenOptions | None = None
    stream: ListenOptions | None = None
    transcribe: TranscribeOptions | None = None
    amd: Amd | None = None
    filler_noise: FillerNoise | None = None
    notify_events: bool | None = None
    notify_stt_latency: bool | None = None
    reset: str | list[str] | None = None
    on_hold_music: str | None = None
    action_hook_delay_action: ActionHookDelayAction | None = None
    sip_request_within_dialog_hook: Hook | None = None
    boost_audio_signal: int | str | None = None
    vad: Vad | None = None
    refer_hook: Hook | None = None
    early_media: bool | None = None
    auto_stream_tts: bool | None = None
    disable_tts_cache: bool | None = None
    track_tts_playout: bool | None = None
    noise_isolation: NoiseIsolation | None = None
    turn_taking: TurnTaking | None = None


@verb("dequeue")
@attrs.frozen(kw_only=True)
class Dequeue(Verb):
    """Take a call waiting in a named queue and bridge it to this one (``dequeue``)."""

    name: str
    action_hook: Hook | None = None
    timeout: float | None = None
    beep: bool | None = None
    call_sid: str | None = None


@_embeds_verbs("listen", "stream", "transcribe", "dub")
@verb("dial")
@attrs.frozen(kw_only=True)
class Dial(Verb):
    """Place an outbound call to one or more targets and bridge it to this call (``dial``).

    ``dtmf_capture`` and ``tag`` are pass-through ``dict[str, Any]``.
    """

    target: list[Target]
    action_hook: Hook | None = None
    on_hold_hook: Hook | None = None
    answer_on_bridge: bool | None = None
    caller_id: str | None = None
    caller_name: str | None = None
    confirm_hook: Hook | None = None
    refer_hook: Hook | None = None
    dial_music: str | None = None
    dtmf_capture: dict[str, Any] | None = None
    dtmf_hook: Hook | None = None
    headers: dict[str, str] | None = None
    anchor_media: bool | None = None
    exit_media_path: bool | None = None
    boost_audio_signal: int | str | None = None
    listen: Listen | None = None
    stream: Listen | None = None
    time_limit: int | None = None
    timeout: int | None = None
    proxy: str | None = None
    transcribe: Transcribe | None = None
    amd: Amd | None = None
    dub: list[Dub] | None = None
    tag: dict[str, Any] | None = None
    forward_pai: bool | None = attrs.field(default=None, metadata={WIRE: "forwardPAI"})
    srtp_encryption: Literal["sdes", "dtls"] | None = None


@verb("dialogflow")
@attrs.frozen(kw_only=True)
class Dialogflow(Verb):
    """Hand the conversation to a Google Dialogflow agent (``dialogflow``).

    ``credentials`` (a service-account key, as JSON text or object) is hidden from ``repr``.
    """

    project: str
    credentials: str | dict[str, Any] = attrs.field(repr=False)
    lang: str
    agent: str | None = None
    environment: str | None = None
    region: str | None = None
    model: Literal["es", "cx", "ces"] | None = None
    action_hook: Hook | None = None
    event_hook: Hook | None = None
    events: list[str] | None = None
    welcome_event: str | None = None
    welcome_event_params: dict[str, Any] | None = None
    no_input_timeout: float | None = None
    no_input_event: str | None = None
    pass_dtmf_as_text_input: bool | None = None
    thinking_music: str | None = None
    tts: Synthesizer | None = None
    bargein: bool | None = None
    query_input: QueryInput | None = None


@verb("dtmf")
@attrs.frozen(kw_only=True)
class Dtmf(Verb):
    """Send DTMF digits to the far end (``dtmf``); ``duration`` is per digit, in ms."""

    dtmf: str
    duration: int | None = None


@verb("enqueue")
@attrs.frozen(kw_only=True)
class Enqueue(Verb):
    """Put the call into a named queue, with hold treatment from ``wait_hook`` (``enqueue``)."""

    name: str
    action_hook: Hook | None = None
    wait_hook: Hook | None = None
    priority: int | None = None


@_embeds_verbs("say", "play")
@verb("gather")
@attrs.frozen(kw_only=True)
class Gather(Verb):
    """Collect DTMF digits and/or speech, optionally while prompting (``gather``)."""

    action_hook: Hook | None = None
    finish_on_key: str | None = None
    input: list[str] | None = None
    num_digits: int | None = None
    min_digits: int | None = None
    max_digits: int | None = None
    inter_digit_timeout: float | None = None
    partial_result_hook: Hook | None = None
    speech_timeout: float | None = None
    listen_during_prompt: bool | None = None
    dtmf_bargein: bool | None = None
    bargein: bool | None = None
    min_bargein_word_count: int | None = None
    timeout: float | None = None
    recognizer: Recognizer | None = None
    play: Play | None = None
    say: Say | None = None
    filler_noise: FillerNoise | None = None
    action_hook_delay_action: ActionHookDelayAction | None = None


@verb("hangup")
@attrs.frozen(kw_only=True)
class Hangup(Verb):
    """End the call, optionally with extra SIP headers on the BYE (``hangup``)."""

    headers: dict[str, str] | None = None


@verb("leave")
@attrs.frozen(kw_only=True)
class Leave(Verb):
    """Leave the conference or queue the call is in (``leave``)."""


@verb("lex")
@attrs.frozen(kw_only=True)
class Lex(Verb):
    """Hand the conversation to an Amazon Lex v2 bot (``lex``).

    ``credentials`` (AWS keys) is a pass-through ``dict[str, Any]``, hidden from ``repr``.
    """

    bot_id: str
    bot_alias: str
    credentials: dict[str, Any] = attrs.field(repr=False)
    region: str
    locale: str | None = None
    intent: LexIntent | None = None
    welcome_message: str | None = None
    metadata: dict[str, Any] | None = None
    bargein: bool | None = None
    pass_dtmf: bool | None = None
    action_hook: Hook | None = None
    event_hook: Hook | None = None
    no_input_timeout: int | None = None
    tts: Synthesizer | None = None


@verb("llm")
@attrs.frozen(kw_only=True)
class Llm(Verb):
    """Connect the caller to a speech-to-speech LLM (``llm``, aliases ``*_s2s``).

    ``llm_options``, ``connect_options`` and ``auth`` are vendor-specific pass-through
    ``dict[str, Any]``; ``auth`` (API keys) is hidden from ``repr``.
    """

    vendor: str
    llm_options: dict[str, Any]
    model: str | None = None
    auth: dict[str, Any] | None = attrs.field(default=None, repr=False)
    connect_options: dict[str, Any] | None = None
    mcp_servers: list[McpServer] | None = None
    action_hook: Hook | None = None
    event_hook: Hook | None = None
    tool_hook: Hook | None = None
    events: list[str] | None = None


@verb("message")
@attrs.frozen(kw_only=True)
class Message(Verb):
    """Send an SMS/MMS through a messaging carrier (``message``)."""

    to: str
    from_: str
    carrier: str | None = None
    account_sid: str | None = attrs.field(default=None, metadata={WIRE: "account_sid"})
    message_sid: str | None = attrs.field(default=None, metadata={WIRE: "message_sid"})
    text: str | None = None
    media: str | list[str] | None = None
    action_hook: Hook | None = None


@verb("pause")
@attrs.frozen(kw_only=True)
class Pause(Verb):
    """Wait silently for ``length`` seconds (``pause``)."""

    length: float


@verb("rasa")
@attrs.frozen(kw_only=True)
class Rasa(Verb):
    """Hold a spoken conversation with a Rasa assistant at ``url`` (``rasa``)."""

    url: str
    recognizer: Recognizer | None = None
    tts: Synthesizer | None = None
    prompt: str | None = None
    action_hook: Hook | None = None
    event_hook: Hook | None = None


@verb("redirect")
@attrs.frozen(kw_only=True)
class Redirect(Verb):
    """Replace the rest of the verb stack with what ``action_hook`` returns (``redirect``)."""

    action_hook: Hook
    status_hook: Hook | None = None


@verb("sip:decline")
@attrs.frozen(kw_only=True)
class SipDecline(Verb):
    """Reject an unanswered call with a SIP error status (``sip:decline``)."""

    status: int
    reason: str | None = None
    headers: dict[str, str] | None = None


@verb("sip:refer")
@attrs.frozen(kw_only=True)
class SipRefer(Verb):
    """Transfer the call elsewhere with a SIP REFER (``sip:refer``)."""

    refer_to: str
    referred_by: str | None = None
    referred_by_display_name: str | None = None
    headers: dict[str, str] | None = None
    action_hook: Hook | None = None
    event_hook: Hook | None = None


@verb("sip:request")
@attrs.frozen(kw_only=True)
class SipRequest(Verb):
    """Send an in-dialog SIP request (INFO, NOTIFY, MESSAGE...) to the caller (``sip:request``)."""

    method: str
    body: str | None = None
    headers: dict[str, str] | None = None
    action_hook: Hook | None = None


@verb("tag")
@attrs.frozen(kw_only=True)
class Tag(Verb):
    """Attach custom data to the call; it comes back as ``customerData`` (``tag``)."""

    data: dict[str, Any]


@verb("rest:dial")
@attrs.frozen(kw_only=True)
class RestDial(Verb):
    """Outbound call set-up used by the REST createCall path (``rest:dial``).

    ``tag`` is a pass-through ``dict[str, Any]``.
    """

    call_hook: Hook = attrs.field(metadata={WIRE: "call_hook"})
    from_: str
    to: Target
    account_sid: str | None = attrs.field(default=None, metadata={WIRE: "account_sid"})
    application_sid: str | None = attrs.field(default=None, metadata={WIRE: "application_sid"})
    call_status_hook: Hook | None = attrs.field(default=None, metadata={WIRE: "call_status_hook"})
    caller_name: str | None = None
    from_host: str | None = None
    speech_synthesis_vendor: str | None = attrs.field(
        default=None, metadata={WIRE: "speech_synthesis_vendor"}
    )
    speech_synthesis_voice: str | None = attrs.field(default=None, metadata={WIRE: "speech_synthesis_voice"})
    speech_synthesis_language: str | None = attrs.field(
        default=None, metadata={WIRE: "speech_synthesis_language"}
    )
    speech_recognizer_vendor: str | None = attrs.field(
        default=None, metadata={WIRE: "speech_recognizer_vendor"}
    )
    speech_recognizer_language: str | None = attrs.field(
        default=None, metadata={WIRE: "speech_recognizer_language"}
    )
    tag: dict[str, Any] | None = None
    headers: dict[str, str] | None = None
    timeout: int | None = None
    amd: Amd | None = None
    dual_streams: bool | None = attrs.field(default=None, metadata={WIRE: "dual_streams"})
    sip_request_within_dialog_hook: str | None = None
    refer_hook: Hook | None = None
    time_limit: int | None = None


#: Every verb model, one per verb name feature-server 0.9.8 implements.
ALL_VERB_CLASSES: tuple[type[Verb], ...] = (
    Alert,
    Answer,
    Conference,
    Config,
    Dequeue,
    Dial,
    Dialogflow,
    Dtmf,
    Dub,
    Enqueue,
    Gather,
    Hangup,
    Leave,
    Lex,
    Listen,
    Llm,
    Message,
    Pause,
    Play,
    Rasa,
    Redirect,
    Say,
    SipDecline,
    SipRefer,
    SipRequest,
    Tag,
    Transcribe,
    RestDial,
)
