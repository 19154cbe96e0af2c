'use strict';
/*
 * The messages a jambonz feature server (0.9.8) sends for an inbound IVR call, shaped after
 * docs/protocol.md §4.1, §4.5, §4.7 and §9 (keys snake_cased except under `sip`/`env_vars`).
 * Built once as JSON text templates; per call only the ids are substituted, so the generator
 * spends its CPU on the socket, not on building payloads.
 */

const crypto = require('crypto');

const B58 = '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz';

/** A short-uuid-like msgid: 22 base58 characters, as jambonz uses. */
function msgid() {
  const bytes = crypto.randomBytes(22);
  let out = '';
  for (let i = 0; i < 22; i++) out += B58[bytes[i] % 58];
  return out;
}

function uuid() {
  return crypto.randomUUID();
}

const FROM = '+15083084809';
const TO = '+15083728299';
const ACCOUNT = '9351f46a-678c-43f5-b8a6-d4eb58d131af';
const APPLICATION = 'f8d5ab6e-2a3b-4c60-9a8e-2d1c4b7e5f10';
const PROVIDER = '2708b1b3-2736-40ea-b502-c53d8396247f';
const FS_ADDR = '10.0.13.72:5070';

const SDP =
  'v=0\r\no=root 81565042 81565042 IN IP4 10.0.13.72\r\ns=Carrier Media Gateway\r\n' +
  'c=IN IP4 10.0.13.72\r\nt=0 0\r\nm=audio 40150 RTP/AVP 0 8 101\r\n' +
  'a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n' +
  'a=fmtp:101 0-16\r\na=sendrecv\r\n';

function sipObject() {
  const headers = {
    via: 'SIP/2.0/UDP 54.172.60.3:5060;rport=5060;branch=z9hG4bKaE3nB7Ub9cX2q;received=10.0.13.72',
    'max-forwards': '69',
    from: `<sip:${FROM}@54.172.60.3:5060>;tag=Hq9yKm1r3XvUe`,
    to: `<sip:${TO}@10.0.13.72>`,
    'call-id': '__CALLID__',
    cseq: '41233 INVITE',
    contact: '<sip:54.172.60.3:5060;transport=udp>',
    'user-agent': 'Carrier Gateway',
    allow: 'INVITE, ACK, CANCEL, BYE, REFER, NOTIFY, OPTIONS',
    'content-type': 'application/sdp',
    'content-length': String(SDP.length),
    'X-Account-Sid': ACCOUNT,
    'X-CID': '__SBCCALLID__',
    'X-Forwarded-For': '54.172.60.3',
    'X-Originating-Carrier': 'Carrier',
    'p-asserted-identity': `<sip:${FROM}@54.172.60.3:5060>`,
  };
  const head = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('');
  return {
    headers,
    raw: `INVITE sip:${TO}@${FS_ADDR} SIP/2.0\r\n${head}\r\n${SDP}`,
    body: SDP,
    method: 'INVITE',
    version: '2.0',
    uri: `sip:${TO}@${FS_ADDR}`,
  };
}

function callInfo(status, sipStatus, sipReason) {
  return {
    call_sid: '__CALLSID__',
    direction: 'inbound',
    from: FROM,
    to: TO,
    call_id: '__CALLID__',
    sbc_callid: '__SBCCALLID__',
    sip_status: sipStatus,
    sip_reason: sipReason,
    call_status: status,
    caller_id: FROM,
    account_sid: ACCOUNT,
    trace_id: '__TRACEID__',
    application_sid: APPLICATION,
    fs_sip_address: FS_ADDR,
    originating_sip_ip: '54.172.60.3',
    originating_sip_trunk_name: 'Carrier',
  };
}

const SESSION_NEW = JSON.stringify({
  type: 'session:new',
  msgid: '__MSGID__',
  call_sid: '__CALLSID__',
  data: {
    sip: sipObject(),
    direction: 'inbound',
    trace_id: '__TRACEID__',
    has_recording: false,
    caller_name: '',
    call_sid: '__CALLSID__',
    account_sid: ACCOUNT,
    application_sid: APPLICATION,
    from: FROM,
    to: TO,
    call_id: '__CALLID__',
    sip_status: 100,
    sip_reason: 'Trying',
    call_status: 'trying',
    sbc_callid: '__SBCCALLID__',
    originating_sip_ip: '54.172.60.3',
    originating_sip_trunk_name: 'Carrier',
    local_sip_address: FS_ADDR,
    public_ip: '3.212.205.202',
    service_provider_sid: PROVIDER,
    defaults: {
      synthesizer: {vendor: 'microsoft', language: 'en-US', voice: 'en-US-JennyNeural'},
      recognizer: {vendor: 'microsoft', language: 'en-US'},
    },
    env_vars: {GREETING_VOICE: 'en-US-JennyNeural'},
  },
});

const TRANSCRIPT = 'I would like to talk to sales';

const GATHER_HOOK = JSON.stringify({
  type: 'verb:hook',
  msgid: '__MSGID__',
  call_sid: '__CALLSID__',
  hook: '/gather',
  data: {
    ...callInfo('in-progress', 200, 'OK'),
    reason: 'speechDetected',
    speech: {
      language_code: 'en-US',
      channel_tag: 1,
      is_final: true,
      alternatives: [{confidence: 0.91, transcript: TRANSCRIPT}],
      vendor: {name: 'microsoft'},
    },
  },
});

const COMPLETED = JSON.stringify({
  type: 'call:status',
  msgid: '__MSGID__',
  call_sid: '__CALLSID__',
  data: {...callInfo('completed', 200, 'OK'), duration: 12, call_termination_by: 'caller'},
});

/** Per-call ids; `fill(template)` substitutes them plus a fresh msgid. */
class CallIds {
  constructor() {
    this.callSid = uuid();
    this.callId = `${uuid()}@10.0.13.72`;
    this.sbcCallId = `${crypto.randomBytes(16).toString('hex')}@0.0.0.0`;
    this.traceId = crypto.randomBytes(16).toString('hex');
  }

  fill(template, id) {
    return template
      .replaceAll('__MSGID__', id)
      .replaceAll('__CALLSID__', this.callSid)
      .replaceAll('__CALLID__', this.callId)
      .replaceAll('__SBCCALLID__', this.sbcCallId)
      .replaceAll('__TRACEID__', this.traceId);
  }
}

module.exports = {SESSION_NEW, GATHER_HOOK, COMPLETED, TRANSCRIPT, CallIds, msgid};
