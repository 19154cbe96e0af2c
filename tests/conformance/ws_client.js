// Talks to a jambonz-trio server the way feature-server 0.9.8's client socket does (ws 8,
// subprotocol ws.jambonz.org, permessage-deflate offered, maxPayload 24 KiB) and prints what it
// saw as one JSON object. The Python test (test_ws_interop.py) starts the server and judges.
'use strict';
const WebSocket = require('ws');

const url = process.argv[2];

function open(sid) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, 'ws.jambonz.org', {maxPayload: 24 * 1024, handshakeTimeout: 1500});
    const conn = {ws, inbox: [], waiters: [], pings: 0, pongs: [], closed: null};
    ws.on('message', (data, isBinary) => {
      const item = isBinary ? {binary: data.length} : JSON.parse(data.toString('utf8'));
      const waiter = conn.waiters.shift();
      if (waiter) waiter(item); else conn.inbox.push(item);
    });
    ws.on('ping', () => { conn.pings += 1; });
    ws.on('pong', (data) => conn.pongs.push(data.toString('utf8')));
    ws.on('close', (code, reason) => {
      conn.closed = {code, reason: reason.toString('utf8')};
      for (const waiter of conn.waiters.splice(0)) waiter(null);
    });
    ws.on('error', (err) => { conn.error = String(err); });
    ws.on('open', () => resolve(conn));
    ws.on('unexpected-response', (req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
    setTimeout(() => reject(new Error(`${sid}: no open`)), 3000);
  });
}

function next(conn) {
  if (conn.inbox.length) return Promise.resolve(conn.inbox.shift());
  if (conn.closed) return Promise.resolve(null);
  return new Promise((resolve) => conn.waiters.push(resolve));
}

function closed(conn) {
  return new Promise((resolve) => {
    if (conn.closed) return resolve(conn.closed);
    conn.ws.once('close', () => resolve(conn.closed));
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function request(type, msgid, sid, data, hook) {
  return JSON.stringify({type, msgid, call_sid: sid, hook, data});
}

async function sessionNew(conn, sid) {
  conn.ws.send(request('session:new', `${sid}-new`, sid, {call_sid: sid, from: '+1', to: '+2', direction: 'inbound'}));
  return next(conn);
}

async function basic() {
  const sid = 'interop-basic';
  const conn = await open(sid);
  const out = {protocol: conn.ws.protocol, extensions: conn.ws.extensions};
  out.sessionAck = await sessionNew(conn, sid);
  // one message in three frames (feature-server never fragments, a proxy may)
  const text = request('verb:hook', 'h1', sid, {marker: 'fragmented', blob: '\u260e'.repeat(3000)}, '/echo');
  const third = Math.floor(text.length / 3);
  conn.ws.send(text.slice(0, third), {fin: false});
  conn.ws.send(text.slice(third, 2 * third), {fin: false});
  conn.ws.send(text.slice(2 * third), {fin: true});
  out.fragmentedAck = await next(conn);
  conn.ws.ping('p-123');
  conn.ws.send(Buffer.from([0, 1, 2]), {binary: true});
  conn.ws.send(request('verb:hook', 'h2', sid, {marker: 'after-binary', blob: 'x'.repeat(20000)}, '/echo'));
  out.bigAck = await next(conn);
  await sleep(700); // the server's keepalive runs every 0.2 s in this test
  out.pings = conn.pings;
  out.pongs = conn.pongs;
  conn.ws.send(request('verb:hook', 'h3', sid, {marker: 'close', blob: ''}, '/close'));
  out.closeAck = await next(conn);
  out.closed = await closed(conn);
  return out;
}

// A call that answers session:new, does one thing to the socket, and reports how it closed.
async function closingCall(sid, act) {
  const conn = await open(sid);
  const out = {sessionAck: await sessionNew(conn, sid)};
  act(conn, sid);
  out.closed = await closed(conn);
  return out;
}

const clientClose = () => closingCall('interop-client-close', (conn) => conn.ws.close(1000, 'call ended'));
const tooBig = () => closingCall('interop-too-big', (conn, sid) =>
  conn.ws.send(request('verb:hook', 'h1', sid, {marker: 'big', blob: 'y'.repeat(40000)}, '/echo')));

(async () => {
  const result = {basic: await basic(), clientClose: await clientClose(), tooBig: await tooBig()};
  process.stdout.write(JSON.stringify(result));
  process.exit(0);
})().catch((err) => { process.stderr.write(String(err.stack || err)); process.exit(1); });
