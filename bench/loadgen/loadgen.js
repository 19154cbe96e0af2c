#!/usr/bin/env node
'use strict';
/*
 * A load generator that behaves like jambonz's feature server towards a WebSocket app:
 * the `ws` 8.x client with subprotocol ws.jambonz.org, maxPayload 24 KiB, a 1500 ms handshake
 * timeout and a 5 s ack deadline per request (docs/protocol.md §2.2, §3.3).
 *
 * Modes (all print one JSON object on stdout at the end; progress goes to stderr):
 *   ivr   N calls, C at a time: connect, session:new -> ack, verb:hook /gather (speech) -> ack,
 *         call:status completed, close 1000.
 *   idle  open N calls (C connects at a time), ack session:new, then hold them idle. Prints
 *         {"event":"holding",...} on stdout and waits for a line "release" on stdin (or
 *         --hold-max-s), then ends every call with call:status completed + close 1000.
 *   long  C calls (default 1) each doing session:new then --hooks verb:hook round trips,
 *         one at a time (message-level throughput).
 *
 * --client light (default) sends prepared JSON text and keeps one timer per request: the
 * generator costs little, leaving the app more of the box's CPU. --client jambonz does, per
 * message, the work jambonz's own client does (JambonzWork below): the app then competes for
 * CPU with a client as heavy as the feature server's.
 *
 * Everything is bounded: --max-s caps the whole run (partial results, exit 2); only the
 * --url given (127.0.0.1 by default) is contacted.
 */

const crypto = require('crypto');
const WebSocket = require('ws');
const readline = require('readline');
const {SESSION_NEW, GATHER_HOOK, COMPLETED, TRANSCRIPT, CallIds, msgid} = require('./payloads');

const assert = require('assert');

const ACK_DEADLINE_MS = 5000; // jambonz RESPONSE_TIMEOUT_MS
const CLOSE_WAIT_MS = 5000; // bound on our wait for the closing handshake

function parseArgs(argv) {
  const opts = {
    url: 'ws://127.0.0.1:3000/ivr',
    mode: 'ivr',
    calls: 2000,
    concurrency: 50,
    hooks: 2000,
    holdMaxS: 120,
    maxS: 300,
    checkAcks: true,
    client: 'light',
  };
  for (let i = 2; i < argv.length; i++) {
    const [k, v] = [argv[i], argv[i + 1]];
    switch (k) {
      case '--url': opts.url = v; i++; break;
      case '--mode': opts.mode = v; i++; break;
      case '--calls': opts.calls = parseInt(v, 10); i++; break;
      case '--concurrency': opts.concurrency = parseInt(v, 10); i++; break;
      case '--hooks': opts.hooks = parseInt(v, 10); i++; break;
      case '--hold-max-s': opts.holdMaxS = parseFloat(v); i++; break;
      case '--max-s': opts.maxS = parseFloat(v); i++; break;
      case '--no-check': opts.checkAcks = false; break;
      case '--client': opts.client = v; i++; break;
      default: throw new Error(`unknown argument ${k}`);
    }
  }
  const host = new URL(opts.url).hostname;
  if (host !== '127.0.0.1' && host !== 'localhost') throw new Error('only 127.0.0.1 is allowed');
  if (!['ivr', 'idle', 'long', 'selfcheck'].includes(opts.mode)) throw new Error(`unknown mode ${opts.mode}`);
  if (!['light', 'jambonz'].includes(opts.client)) throw new Error(`unknown client ${opts.client}`);
  return opts;
}

const now = () => Number(process.hrtime.bigint()) / 1e6; // ms

class Stats {
  constructor() {
    this.samples = [];
  }
  add(ms) {
    this.samples.push(ms);
  }
  summary() {
    const s = Float64Array.from(this.samples).sort();
    const n = s.length;
    if (!n) return {n: 0};
    const q = (p) => s[Math.min(n - 1, Math.max(0, Math.ceil(p * n) - 1))];
    let sum = 0;
    for (const x of s) sum += x;
    const r = (x) => Math.round(x * 1000) / 1000;
    return {n, mean: r(sum / n), p50: r(q(0.5)), p90: r(q(0.9)), p99: r(q(0.99)), max: r(s[n - 1])};
  }
}

const stats = {
  handshake: new Stats(),
  session_new: new Stats(),
  verb_hook: new Stats(),
};
const errors = {};
const unexpected = {};
const extensions = {}; // negotiated Sec-WebSocket-Extensions (permessage-deflate or none)
let completed = 0;
let started = 0;

function error(kind) {
  errors[kind] = (errors[kind] || 0) + 1;
}

/*
 * --client jambonz: the per-message work of jambonz's client, the feature server's WsRequestor
 * (jambonz-feature-server v0.9.8 lib/utils/ws-requestor.js: `request` for every message it
 * sends, `_onMessage` and `_recvAck` for every ack). Per request: the payload is built as an
 * object with camelCase keys (as the call session hands it over) and snake-cased at every depth
 * except under customerData/sip/env_vars/args (lib/utils/snakecase-keys.js with to-snake-case:
 * docs/protocol.md §3.2), a short-uuid msgid, the envelope spread, JSON.stringify, an in-flight
 * entry with its own 5 s timer and success/failure closures, a send callback that logs; per ack:
 * JSON.parse, a debug log of the object, the destructuring and checks, the in-flight lookup,
 * clearTimeout, the round trip from process.hrtime, a debug log and a stats histogram sample.
 * Logging is pino's at level info (debug calls are no-ops, their arguments are still built);
 * the histogram line is formatted but not sent (no statsd datagrams here). Not mimicked: what
 * the call session does with the verbs once acked (task creation, verb validation).
 */
const HOOK_MSG_TYPES = ['session:new', 'session:reconnect', 'session:redirect', 'session:adulting',
  'verb:hook', 'verb:status', 'dial:confirm', 'call:status', 'queue:status', 'llm:event', 'llm:tool-call',
  'tts:streaming-event', 'tts:tokens-result', 'jambonz:error'];
const NO_ACK_TYPES = ['call:status', 'verb:status', 'jambonz:error', 'llm:event', 'llm:tool-call',
  'tts:streaming-event', 'tts:tokens-result'];
const HOOKED_TYPES = ['verb:hook', 'dial:confirm', 'session:redirect', 'llm:event', 'llm:tool-call'];
const SNAKE_KEPT = ['customerData', 'sip', 'env_vars', 'args'];
const noop = () => {};
const logger = {debug: noop, info: noop}; // pino at level info
const statsLines = {count: 0};

function toSnake(key) {
  // to-snake-case 1.x: separators and camel humps to spaces, lower case, spaces to '_'
  return key
    .replace(/[\W_]+(.|$)/g, (m, next) => (next ? ` ${next}` : ''))
    .replace(/([a-z\d])([A-Z])/g, '$1 $2')
    .toLowerCase()
    .trim()
    .replace(/\s+/g, '_');
}

const isObject = (v) => typeof v === 'object' && v !== null;

function snakeKeys(value) {
  if (Array.isArray(value)) return value.map((v) => (isObject(v) ? snakeKeys(v) : v));
  const out = {};
  for (const [key, v] of Object.entries(value)) {
    if (SNAKE_KEPT.includes(key)) {
      out[key] = v;
      continue;
    }
    out[toSnake(key)] = isObject(v) ? snakeKeys(v) : v;
  }
  return out;
}

function toCamel(key) {
  return key.replace(/_([a-z\d])/g, (m, c) => c.toUpperCase());
}

/** The camelCase object a snake_cased template's data came from (built once per template). */
function camelKeys(value) {
  if (Array.isArray(value)) return value.map((v) => (isObject(v) ? camelKeys(v) : v));
  const out = {};
  for (const [key, v] of Object.entries(value)) {
    out[SNAKE_KEPT.includes(key) ? key : toCamel(key)] = SNAKE_KEPT.includes(key) || !isObject(v) ? v : camelKeys(v);
  }
  return out;
}

const PARAMS = {
  session_new: camelKeys(JSON.parse(SESSION_NEW).data),
  verb_hook: camelKeys(JSON.parse(GATHER_HOOK).data),
  completed: camelKeys(JSON.parse(COMPLETED).data),
};
const WIRE_TYPE = {session_new: 'session:new', verb_hook: 'verb:hook', completed: 'call:status'};

function roundTrip(startAt) {
  const diff = process.hrtime(startAt);
  return (diff[0] * 1e3 + diff[1] * 1e-6).toFixed(0);
}

function histogram(name, value, tags) {
  statsLines.count++;
  return `${name}:${value}|h|#${tags.join(',')}`;
}

class JambonzWork {
  constructor(ids) {
    this.ids = ids;
    this.callSid = ids.callSid;
    this.url = '/gather';
    this.messagesInFlight = new Map();
    // the call's own values in the payloads (ids, the SIP message of this call)
    const sub = (v) => (typeof v === 'string' ? ids.fill(v, '') : v);
    this.own = {};
    for (const [kind, params] of Object.entries(PARAMS)) {
      const own = {};
      for (const [k, v] of Object.entries(params)) {
        own[k] = k === 'sip' ? JSON.parse(ids.fill(JSON.stringify(v), '')) : sub(v);
      }
      this.own[kind] = own;
    }
  }

  /** The frame to send for `kind` (with its msgid); an ack-awaiting one is put in flight. */
  request(kind, onAck, onTimeout) {
    const type = WIRE_TYPE[kind];
    assert(HOOK_MSG_TYPES.includes(type));
    const wantsAck = !NO_ACK_TYPES.includes(type);
    const params = {...this.own[kind]}; // the call session builds a fresh object per request
    const payload = snakeKeys(params);
    const msgid = shortId();
    const obj = {
      type,
      msgid,
      call_sid: this.callSid,
      hook: HOOKED_TYPES.includes(type) ? this.url : undefined,
      data: {...payload},
    };
    const text = JSON.stringify(obj);
    const sent = () => logger.debug({obj}, `WsRequestor:request websocket: sent (${this.url})`);
    if (!wantsAck) return {msgid, text, sent};
    const timer = setTimeout(() => {
      const {failure} = this.messagesInFlight.get(msgid) || {};
      if (failure) failure(`timeout from far end for msgid ${msgid}`);
      this.messagesInFlight.delete(msgid);
    }, ACK_DEADLINE_MS);
    const startAt = process.hrtime();
    this.messagesInFlight.set(msgid, {
      timer,
      success: (response) => {
        clearTimeout(timer);
        const rtt = roundTrip(startAt);
        logger.debug({response}, `WsRequestor:request ${this.url} succeeded in ${rtt}ms`);
        histogram('app.hook.ws_response_time', rtt, ['hook_type:app']);
        onAck(response);
      },
      failure: (err) => {
        clearTimeout(timer);
        onTimeout(err);
      },
    });
    return {msgid, text, sent};
  }

  /** An inbound frame, as `_onMessage` takes it: returns the parsed object. */
  onMessage(content) {
    const obj = JSON.parse(content);
    logger.debug({obj}, 'WsRequestor:_onMessage - received message');
    const {type, msgid, command, queueCommand = false, data} = obj;
    const callSid = obj.callSid || this.callSid;
    assert.ok(type, 'type property not supplied');
    if (type === 'ack') {
      assert.ok(msgid, 'msgid not supplied');
      const entry = this.messagesInFlight.get(msgid);
      if (entry) {
        this.messagesInFlight.delete(msgid);
        entry.success(data);
      }
    } else if (type === 'command') {
      logger.debug({msgid, command, callSid, queueCommand, data}, 'received command');
    }
    return obj;
  }

  close() {
    for (const {timer} of this.messagesInFlight.values()) clearTimeout(timer);
    this.messagesInFlight.clear();
  }
}

/** A short-uuid-like id (22 base58 characters from a v4 uuid), as short.generate() makes. */
const B58 = '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz';
function shortId() {
  let n = BigInt(`0x${crypto.randomUUID().replace(/-/g, '')}`);
  let out = '';
  while (n > 0n) {
    out = B58[Number(n % 58n)] + out;
    n /= 58n;
  }
  return out.padStart(22, B58[0]);
}

/*
 * One call over one socket. `script` is the list of requests to make after session:new:
 * 'hook' = one verb:hook /gather round trip. `hold` (a Promise) delays the end of the call.
 */
class CallDriver {
  constructor(opts, nHooks, hold) {
    this.opts = opts;
    this.nHooks = nHooks;
    this.hold = hold;
    this.ids = new CallIds();
    this.work = opts.client === 'jambonz' ? new JambonzWork(this.ids) : null;
    this.pending = null; // {id, kind, t0, timer}
    this.done = false;
    this.ackedSession = false;
  }

  run() {
    return new Promise((resolve) => {
      this.resolve = resolve;
      this.t0 = now();
      let ws;
      try {
        ws = new WebSocket(this.opts.url, 'ws.jambonz.org', {
          maxPayload: 24 * 1024,
          handshakeTimeout: 1500,
          headers: {'User-Agent': 'jambonz'},
        });
      } catch (e) {
        error(`connect: ${e.message}`);
        resolve(false);
        return;
      }
      this.ws = ws;
      ws.on('open', () => this.onOpen());
      ws.on('message', (data, isBinary) => this.onMessage(data, isBinary));
      ws.on('error', (e) => {
        error(`socket: ${e.code || e.message}`);
      });
      ws.on('close', (code) => this.onClose(code));
    });
  }

  onOpen() {
    stats.handshake.add(now() - this.t0);
    const ext = this.ws.extensions || 'none';
    extensions[ext] = (extensions[ext] || 0) + 1;
    this.request('session_new', SESSION_NEW);
  }

  request(kind, template) {
    if (this.work) {
      const t0 = now();
      const timedOut = () => {
        error(`${kind}: no ack within 5 s`);
        this.finish(4000);
      };
      const {msgid: id, text, sent} = this.work.request(kind, noop, timedOut);
      this.pending = {id, kind, t0, timer: null};
      this.ws.send(text, sent);
      return;
    }
    const id = msgid();
    const text = this.ids.fill(template, id);
    const timer = setTimeout(() => {
      error(`${kind}: no ack within 5 s`);
      this.finish(4000);
    }, ACK_DEADLINE_MS);
    this.pending = {id, kind, t0: now(), timer};
    this.ws.send(text);
  }

  onMessage(data, isBinary) {
    if (isBinary) {
      unexpected.binary = (unexpected.binary || 0) + 1;
      return;
    }
    let msg;
    try {
      msg = this.work ? this.work.onMessage(data) : JSON.parse(data);
    } catch (e) {
      error('invalid JSON from app');
      return;
    }
    if (msg.type !== 'ack') {
      const k = `${msg.type}:${msg.command || ''}`;
      unexpected[k] = (unexpected[k] || 0) + 1;
      return;
    }
    const p = this.pending;
    if (!p || msg.msgid !== p.id) {
      error('ack for an unknown msgid');
      return;
    }
    clearTimeout(p.timer);
    stats[p.kind].add(now() - p.t0);
    this.pending = null;
    if (this.opts.checkAcks && !this.check(p.kind, msg.data)) error(`${p.kind}: ack verbs not as expected`);
    if (p.kind === 'session_new') {
      this.ackedSession = true;
      this.hooksLeft = this.nHooks;
    }
    this.next();
  }

  check(kind, data) {
    if (!Array.isArray(data) || !data.length) return false;
    if (kind === 'session_new') {
      const g = data[1];
      return data[0].verb === 'say' && g && g.verb === 'gather' && g.actionHook === '/gather';
    }
    return data[0].verb === 'say' && data[0].text === `You said: ${TRANSCRIPT}` &&
      data[1] && data[1].verb === 'hangup';
  }

  next() {
    if (this.done) return;
    if (this.hooksLeft > 0) {
      this.hooksLeft--;
      this.request('verb_hook', GATHER_HOOK);
      return;
    }
    if (this.hold) {
      const h = this.hold;
      this.hold = null;
      holding.count++;
      holding.check();
      if (this.onSettled) this.onSettled();
      h.then(() => this.finish(1000));
      return;
    }
    this.finish(1000);
  }

  finish(code) {
    if (this.done) return;
    this.done = true;
    const ws = this.ws;
    if (ws.readyState === WebSocket.OPEN) {
      if (code === 1000) {
        if (this.work) {
          const {text, sent} = this.work.request('completed');
          ws.send(text, sent);
        } else {
          ws.send(this.ids.fill(COMPLETED, msgid()));
        }
        this.ok = true;
      }
      ws.close(code);
      this.closeTimer = setTimeout(() => {
        error('close handshake not completed within 5 s');
        ws.terminate();
      }, CLOSE_WAIT_MS);
    } else {
      ws.terminate();
    }
  }

  onClose(code) {
    clearTimeout(this.closeTimer);
    if (this.work) this.work.close();
    if (this.pending) {
      clearTimeout(this.pending.timer);
      error(`${this.pending.kind}: socket closed before the ack`);
      this.pending = null;
    }
    if (!this.done) {
      error(`closed by app (${code})`);
      this.done = true;
    } else if (this.ok && code !== 1000 && code !== 1005) {
      error(`close code ${code}`);
    }
    if (this.ok) completed++;
    if (this.hold) {
      holding.failed++; // ended before it was held
      holding.check();
    }
    this.resolve(Boolean(this.ok));
  }
}

const holding = {
  count: 0,
  target: 0,
  failed: 0,
  onAll: null,
  check() {
    if (this.onAll && this.count + this.failed >= this.target) {
      const f = this.onAll;
      this.onAll = null;
      f();
    }
  },
};

/** Run `total` tasks, `limit` at a time. */
async function pool(total, limit, makeTask, progressEvery, count = true) {
  let next = 0;
  let done = 0;
  async function worker() {
    while (next < total && !aborted) {
      const i = next++;
      if (count) started++;
      await makeTask(i);
      done++;
      if (progressEvery && done % progressEvery === 0) process.stderr.write(`  ${done}/${total}\n`);
    }
  }
  const workers = [];
  for (let w = 0; w < Math.min(limit, total); w++) workers.push(worker());
  await Promise.all(workers);
}

let aborted = false;

/** --mode selfcheck: --client jambonz sends the payloads --client light sends (same keys, values). */
function selfCheck() {
  const ids = new CallIds();
  const work = new JambonzWork(ids);
  const templates = {session_new: SESSION_NEW, verb_hook: GATHER_HOOK, completed: COMPLETED};
  const result = {};
  for (const [kind, template] of Object.entries(templates)) {
    const mine = JSON.parse(work.request(kind, noop, noop).text);
    const light = JSON.parse(ids.fill(template, mine.msgid));
    result[kind] = assertDeepEqual(mine.data, light.data);
  }
  work.close();
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(Object.values(result).every(Boolean) ? 0 : 1);
}

function assertDeepEqual(a, b) {
  try {
    assert.deepStrictEqual(a, b);
    return true;
  } catch (e) {
    process.stderr.write(`${e.message}\n`);
    return false;
  }
}

async function main() {
  const opts = parseArgs(process.argv);
  if (opts.mode === 'selfcheck') selfCheck();
  const t0 = now();
  const guard = setTimeout(() => {
    aborted = true;
    report(opts, t0, {timed_out: true});
    process.exit(2);
  }, opts.maxS * 1000);
  const progress = Math.max(1000, Math.ceil(opts.calls / 4));

  if (opts.mode === 'ivr') {
    await pool(opts.calls, opts.concurrency, () => new CallDriver(opts, 1, null).run(), progress);
  } else if (opts.mode === 'long') {
    await pool(opts.calls, opts.concurrency, () => new CallDriver(opts, opts.hooks, null).run(), 0);
  } else {
    holding.target = opts.calls;
    const allHeld = new Promise((r) => (holding.onAll = r));
    const drivers = [];
    const opening = pool(opts.calls, opts.concurrency, (i) => {
      let release;
      const d = new CallDriver(opts, 0, new Promise((r) => (release = r)));
      d.release = release;
      drivers.push(d);
      // the connect slot is freed once the call is held, or has failed
      return new Promise((resolve) => {
        d.onSettled = resolve;
        d.closed = d.run();
        d.closed.then(resolve);
      });
    }, progress);
    await opening;
    holding.check();
    await allHeld;
    const tHeld = now() - t0;
    process.stdout.write(JSON.stringify({event: 'holding', held: holding.count, failed: holding.failed,
      open_s: Math.round(tHeld) / 1000}) + '\n');
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, opts.holdMaxS * 1000);
      const rl = readline.createInterface({input: process.stdin});
      rl.on('line', (line) => {
        if (line.trim() === 'release') {
          clearTimeout(timer);
          rl.close();
          resolve();
        }
      });
      rl.on('close', () => {
        clearTimeout(timer);
        resolve();
      });
    });
    // end the calls C at a time, as they were opened (jambonz's calls do not all end at once)
    await pool(drivers.length, opts.concurrency, (i) => {
      drivers[i].release();
      return drivers[i].closed;
    }, 0, false);
  }
  clearTimeout(guard);
  report(opts, t0, {});
}

function report(opts, t0, extra) {
  const elapsed = (now() - t0) / 1000;
  const out = {
    mode: opts.mode,
    client: opts.client,
    calls: opts.calls,
    concurrency: opts.concurrency,
    ...(opts.mode === 'long' && {hooks_per_call: opts.hooks}),
    started,
    completed,
    elapsed_s: Math.round(elapsed * 1000) / 1000,
    latency_ms: {
      handshake: stats.handshake.summary(),
      session_new: stats.session_new.summary(),
      verb_hook: stats.verb_hook.summary(),
    },
    errors,
    error_count: Object.values(errors).reduce((a, b) => a + b, 0),
    unexpected,
    extensions,
    ...extra,
  };
  if (opts.mode === 'long') out.hooks_per_s = Math.round(stats.verb_hook.samples.length / elapsed);
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((e) => {
  process.stderr.write(`loadgen failed: ${e.stack}\n`);
  process.exit(1);
});
