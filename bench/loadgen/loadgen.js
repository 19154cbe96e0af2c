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
 * Everything is bounded: --max-s caps the whole run (partial results, exit 2); only the
 * --url given (127.0.0.1 by default) is contacted.
 */

const WebSocket = require('ws');
const readline = require('readline');
const {SESSION_NEW, GATHER_HOOK, COMPLETED, TRANSCRIPT, CallIds, msgid} = require('./payloads');

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
      default: throw new Error(`unknown argument ${k}`);
    }
  }
  const host = new URL(opts.url).hostname;
  if (host !== '127.0.0.1' && host !== 'localhost') throw new Error('only 127.0.0.1 is allowed');
  if (!['ivr', 'idle', 'long'].includes(opts.mode)) throw new Error(`unknown mode ${opts.mode}`);
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
 * One call over one socket. `script` is the list of requests to make after session:new:
 * 'hook' = one verb:hook /gather round trip. `hold` (a Promise) delays the end of the call.
 */
class CallDriver {
  constructor(opts, nHooks, hold) {
    this.opts = opts;
    this.nHooks = nHooks;
    this.hold = hold;
    this.ids = new CallIds();
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
      msg = JSON.parse(data);
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
        ws.send(this.ids.fill(COMPLETED, msgid()));
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

async function main() {
  const opts = parseArgs(process.argv);
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
