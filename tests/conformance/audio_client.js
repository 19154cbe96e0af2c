// Plays jambonz's media server (mod_audio_fork 1.2.33 driven by feature-server 0.9.8) against a
// jambonz-trio server, with Node's ws 8 as an independent websocket client, and prints what it
// saw as one JSON object. The Python test (test_audio_interop.py) runs the server and judges.
//
// Module behaviour emulated (docs/protocol.md §13): subprotocol audio.drachtio.org, Basic auth,
// Origin http://<host>, a flat JSON metadata frame first, L16 frames (sometimes two packets in
// one), DTMF without `type` and with a string duration, playDone with string values, marks
// reported when the playout (8 kHz, real time) reaches them, `cleared` on killAudio, nothing on
// clearMarks, close 1000 without reason on disconnect.
'use strict';
const WebSocket = require('ws');

// `node audio_client.js BASE USER PASSWORD`: the scenarios below, against an audio route.
// `node audio_client.js listen URL USER PASSWORD CALL_SID METADATA`: the media server's side of
// one listen a call handler started (URL: the absolute URL jambonz resolved from the verb's;
// METADATA: the verb's `metadata` as JSON, merged into the first frame as jambonz does).
const listenMode = process.argv[2] === 'listen';
const [base, user, password] = listenMode ? ['', process.argv[4], process.argv[5]] : process.argv.slice(2);
const auth = 'Basic ' + Buffer.from(`${user}:${password}`).toString('base64');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const PACKET = 320; // 20 ms of 8 kHz mono L16

// What an echo of `buf` carries: jambonz-trio sends every -1 sample as -2 (mod_audio_fork
// takes -1 for a mark's place in its playout buffer; docs/audio.md).
function echoOf(buf) {
  const out = Buffer.from(buf);
  for (let i = 0; i + 1 < out.length; i += 2) {
    if (out.readInt16LE(i) === -1) out.writeInt16LE(-2, i);
  }
  return out;
}

function tone(frames, seed) {
  const buf = Buffer.alloc(frames * PACKET);
  for (let i = 0; i < buf.length / 2; i++) buf.writeInt16LE(Math.round(8000 * Math.sin((i + seed) / 7)), i * 2);
  return buf;
}

function metadata(callSid, extra) {
  return JSON.stringify({
    sampleRate: 8000, mixType: 'mono', callSid, direction: 'inbound', from: '+15083084809',
    to: '+15083728299', callId: `${callSid}@10.0.0.1`, sbcCallid: 'sbc', sipStatus: 200, sipReason: 'OK',
    callStatus: 'in-progress', callerId: '+15083084809', accountSid: 'acc', traceId: 'trace',
    applicationSid: 'app', fsSipAddress: '10.0.0.2:5060', ...extra,
  });
}

// One audio socket, with the module's reactions to what the app sends.
function open(path, {protocol = 'audio.drachtio.org', creds = auth} = {}) {
  return new Promise((resolve, reject) => {
    const headers = {Origin: 'http://127.0.0.1'};
    if (creds) headers.Authorization = creds;
    const ws = new WebSocket(base + path, protocol, {headers, perMessageDeflate: false});
    const conn = {ws, texts: [], audio: [], events: [], closed: null, marks: [], played: 0, received: 0};
    // streamed playout: 16 bytes per ms; a mark fires when the playout passes its position
    const tick = setInterval(() => {
      conn.played = Math.min(conn.received, conn.played + PACKET);
      while (conn.marks.length && conn.marks[0].at <= conn.played) send(conn, conn.marks.shift().name, 'playout');
      for (const w of conn.waiters || []) w();
    }, 20);
    ws.on('message', (data, isBinary) => {
      if (isBinary) {
        conn.audio.push(Buffer.from(data));
        conn.received += data.length;
        return;
      }
      const msg = JSON.parse(data.toString('utf8'));
      conn.texts.push(msg);
      if (msg.type === 'mark') conn.marks.push({name: msg.data.name, at: conn.received});
      else if (msg.type === 'clearMarks') conn.marks = [];
      else if (msg.type === 'killAudio') {
        conn.played = conn.received;
        for (const m of conn.marks.splice(0)) send(conn, m.name, 'cleared');
      } else if (msg.type === 'playAudio') {
        const ms = Buffer.from(msg.data.audioContent, 'base64').length / 16;
        setTimeout(() => ws.send(JSON.stringify({type: 'playDone', data: {id: msg.data.id,
          playbackSeconds: String(Math.floor(ms / 1000)), playbackMilliseconds: String(ms),
          playbackLastOffsetPos: String(ms * 8)}})), 10);
      } else if (msg.type === 'disconnect') ws.close(1000);
      for (const w of conn.waiters || []) w();
    });
    ws.on('close', (code, reason) => {
      clearInterval(tick);
      conn.closed = {code, reason: reason.toString('utf8')};
      for (const w of conn.waiters || []) w();
    });
    ws.on('error', (err) => { conn.error = String(err); });
    ws.on('open', () => resolve(conn));
    ws.on('unexpected-response', (req, res) => { clearInterval(tick); reject(new Error(`HTTP ${res.statusCode}`)); });
    setTimeout(() => reject(new Error(`${path}: no open`)), 5000);
  });
}

function send(conn, name, event) {
  // built like the module's, by concatenation (lws_glue.cpp:573-575)
  conn.ws.send('{"type": "mark", "data": {"name":"' + name + '", "event": "' + event + '"}}');
}

function until(conn, test) {
  return new Promise((resolve) => {
    const check = () => {
      if (test() || conn.closed) {
        conn.waiters = (conn.waiters || []).filter((w) => w !== check);
        resolve();
      }
    };
    conn.waiters = [...(conn.waiters || []), check];
    check();
  });
}

async function echo(id, {terminateAfter} = {}) {
  const conn = await open(`/interop?scenario=echo&id=${id}`);
  const out = {protocol: conn.ws.protocol, extensions: conn.ws.extensions};
  conn.ws.send(metadata(`echo-${id}`, {agent: 'bob'}));
  const sent = tone(110, id.length);
  let offset = 0;
  for (let i = 0; offset < sent.length; i++) {
    const size = i % 10 === 9 ? 2 * PACKET : PACKET; // now and then two packets in one message
    conn.ws.send(sent.subarray(offset, offset + size));
    offset += size;
    if (terminateAfter && offset >= terminateAfter) {
      await sleep(100);
      conn.ws.terminate(); // an abrupt TCP reset mid-stream
      out.terminated = true;
      return out;
    }
    await sleep(2);
  }
  await until(conn, () => conn.received >= sent.length && conn.texts.length >= 2 && conn.marks.length === 0);
  await sleep(100);
  out.echoExact = Buffer.concat(conn.audio).equals(echoOf(sent));
  out.echoedBytes = conn.received;
  out.texts = conn.texts;
  conn.ws.close(1000); // jambonz ends the listen: 1000, no reason
  await until(conn, () => false);
  out.closed = conn.closed;
  return out;
}

async function control() {
  const conn = await open('/interop?scenario=control');
  conn.ws.send(metadata('control-1', {}));
  await until(conn, () => conn.texts.some((m) => m.type === 'clearMarks'));
  await sleep(50);
  conn.ws.send('not json'); // junk the app must survive
  conn.ws.send('{"type":"weird"}');
  conn.ws.send('{"event":"dtmf","dtmf":"5","duration":"1600"}');
  await until(conn, () => false); // until the app asks for disconnect and the socket closes
  return {texts: conn.texts, closed: conn.closed, binary: conn.received};
}

async function bye() {
  const conn = await open('/interop?scenario=bye', {protocol: 'audio.jambonz.org'});
  conn.ws.send(metadata('bye-1', {}));
  await until(conn, () => false);
  return {protocol: conn.ws.protocol, closed: conn.closed};
}

async function refused(path, opts) {
  try {
    const conn = await open(path, opts);
    conn.ws.close();
    return 'opened';
  } catch (err) {
    return err.message;
  }
}

// One listen, as the media server runs it: metadata, one second of tone in real-time packets,
// then whatever the app sends back (streamed audio, a clip to play) until the app closes.
async function listen(url, callSid, custom) {
  const conn = await open(url);
  conn.ws.send(metadata(callSid, custom));
  const sent = tone(50, 3);
  for (let offset = 0; offset < sent.length; offset += PACKET) {
    conn.ws.send(sent.subarray(offset, offset + PACKET));
    await sleep(2);
  }
  await until(conn, () => false); // until the app leaves its listen block and closes
  return {
    protocol: conn.ws.protocol, echoExact: Buffer.concat(conn.audio).equals(echoOf(sent)),
    echoedBytes: conn.received, texts: conn.texts, closed: conn.closed,
  };
}

async function main() {
  if (listenMode) {
    process.stdout.write(JSON.stringify(await listen(process.argv[3], process.argv[6], JSON.parse(process.argv[7]))));
    return;
  }
  const out = {};
  const [a, b, c, d] = await Promise.all([
    echo('one'), echo('two'), echo('reset', {terminateAfter: 30 * PACKET}), control(),
  ]);
  Object.assign(out, {echoOne: a, echoTwo: b, reset: c, control: d});
  out.bye = await bye();
  out.wrongPassword = await refused('/interop?scenario=echo&id=x', {creds: 'Basic ' + Buffer.from('u:wrong').toString('base64')});
  out.noAuth = await refused('/interop?scenario=echo&id=x', {creds: null});
  out.unknownPath = await refused('/nowhere');
  out.callSubprotocol = await refused('/interop?scenario=echo&id=x', {protocol: 'ws.jambonz.org'});
  process.stdout.write(JSON.stringify(out));
}

main().catch((err) => { console.error(err); process.exit(1); });
