// Audio-stream load generator (issue 15): N concurrent listen sockets, each behaving like
// jambonz's media server for an 8 kHz mono call: subprotocol audio.drachtio.org, a metadata
// frame, then one 320-byte L16 frame every 20 ms. Each frame carries its stream and sequence
// number in its first 8 bytes; the app under test echoes every frame back unchanged, and the
// round trip (echo received - frame sent) of every frame is measured.
//
//   node audio_loadgen.js ws://127.0.0.1:PORT/echo/audio N SECONDS [WARMUP_SECONDS]
//
// The streams are spread over the 20 ms period in 10 phase groups (2 ms apart), as calls are;
// every send is scheduled on an absolute clock (no drift). Prints one JSON object: frames sent,
// echoed, lost, late (round trip over 20 ms, i.e. the echo of a frame is not back before the
// next frame is due), latency percentiles (ms), and the generator's own send lag, so that a
// saturated generator is told apart from a slow app. Frames of the warm-up are not counted.
'use strict';
const WebSocket = require('ws');

const [, , url, nArg, secondsArg, warmupArg] = process.argv;
const N = Number(nArg);
const SECONDS = Number(secondsArg);
const WARMUP = Number(warmupArg || 3);
const PERIOD = 20; // ms
const GROUPS = 10;
const FRAME = 320;
const LATE_MS = 20;

const now = () => Number(process.hrtime.bigint()) / 1e6;

function metadata(i) {
  return JSON.stringify({
    sampleRate: 8000, mixType: 'mono', callSid: `bench-${i}`, direction: 'inbound',
    from: '+15083084809', to: '+15083728299', callId: `bench-${i}@10.0.0.1`, accountSid: 'acc',
    applicationSid: 'app', callStatus: 'in-progress', sipStatus: 200,
  });
}

function open(i) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, 'audio.drachtio.org', {headers: {Origin: 'http://127.0.0.1'}, perMessageDeflate: false});
    const s = {ws, i, sent: new Map(), echoed: 0, late: 0, lat: [], closed: false, error: null};
    ws.on('open', () => { ws.send(metadata(i)); resolve(s); });
    ws.on('message', (data, isBinary) => {
      if (!isBinary) return; // marks
      const t = now();
      const seq = data.readUInt32LE(4);
      const at = s.sent.get(seq);
      if (at === undefined) return;
      s.sent.delete(seq);
      if (at.counted) {
        const ms = t - at.t;
        s.echoed += 1;
        s.lat.push(ms);
        if (ms > LATE_MS) s.late += 1;
      }
    });
    ws.on('error', (err) => { s.error = String(err); reject(err); });
    ws.on('close', () => { s.closed = true; });
  });
}

function pct(sorted, p) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}

async function main() {
  const streams = [];
  for (let i = 0; i < N; i += 50) {
    const batch = [];
    for (let j = i; j < Math.min(N, i + 50); j++) batch.push(open(j));
    streams.push(...(await Promise.all(batch)));
  }
  const payload = Buffer.alloc(FRAME);
  const start = now() + 50;
  const countFrom = start + WARMUP * 1000;
  const end = countFrom + SECONDS * 1000;
  setTimeout(() => process.stderr.write('window\n'), countFrom - now()); // the driver's cue
  const lags = [];
  let sentCounted = 0;
  let tick = 0;
  await new Promise((resolve) => {
    const step = () => {
      const due = start + tick * (PERIOD / GROUPS);
      const t = now();
      if (due >= end) return resolve();
      if (t < due) { setTimeout(step, Math.max(0, due - t - 0.2)); return; }
      const group = tick % GROUPS;
      const seq = Math.floor(tick / GROUPS);
      const counted = due >= countFrom;
      if (counted) lags.push(t - due);
      for (let k = group; k < streams.length; k += GROUPS) {
        const s = streams[k];
        if (s.closed) continue;
        const frame = Buffer.from(payload);
        frame.writeUInt32LE(s.i, 0);
        frame.writeUInt32LE(seq, 4);
        s.sent.set(seq, {t: now(), counted});
        s.ws.send(frame);
        if (counted) sentCounted += 1;
      }
      tick += 1;
      setImmediate(step);
    };
    step();
  });
  await new Promise((r) => setTimeout(r, 1000)); // let the last echoes come back
  const lat = [];
  let echoed = 0;
  let late = 0;
  let closed = 0;
  for (const s of streams) {
    echoed += s.echoed;
    late += s.late;
    closed += s.closed ? 1 : 0;
    for (const v of s.lat) lat.push(v);
    s.ws.close(1000);
  }
  lat.sort((a, b) => a - b);
  lags.sort((a, b) => a - b);
  const lost = sentCounted - echoed;
  process.stdout.write(JSON.stringify({
    streams: N, seconds: SECONDS, sent: sentCounted, echoed, lost, late,
    lateFraction: sentCounted ? (late + lost) / sentCounted : 0,
    p50: pct(lat, 0.5), p99: pct(lat, 0.99), max: lat.length ? lat[lat.length - 1] : null,
    sendLagP99: pct(lags, 0.99), closedEarly: closed,
  }) + '\n');
  await new Promise((r) => setTimeout(r, 300));
  process.exit(0);
}

main().catch((err) => { console.error(String(err)); process.exit(1); });
