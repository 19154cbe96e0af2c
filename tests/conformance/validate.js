'use strict';
/*
 * Conformance harness for jambonz-trio's verb models.
 *
 * stdin: a JSON array of test cases, each case a verb list as an app would send it.
 * stdout: a JSON array, one entry per case: {ok: true} or {ok: false, error: "..."}.
 *
 * Each list goes through exactly the calls feature-server makes before running verbs:
 * normalizeJambones(logger, list), then validateVerb(name, data, logger) per element.
 */
const {normalizeJambones, validateVerb} = require('@jambonz/verb-specifications');

const noop = () => {};
const logger = {debug: noop, info: noop, warn: noop, error: noop, child: () => logger};

function check(list) {
  try {
    for (const tdata of normalizeJambones(logger, list)) {
      const name = Object.keys(tdata)[0];
      validateVerb(name, tdata[name], logger);
    }
    return {ok: true};
  } catch (err) {
    return {ok: false, error: String(err && err.message ? err.message : err)};
  }
}

const chunks = [];
process.stdin.on('data', (chunk) => chunks.push(chunk));
process.stdin.on('end', () => {
  const cases = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  if (!Array.isArray(cases)) throw new Error('stdin must be a JSON array of cases');
  process.stdout.write(JSON.stringify(cases.map(check)));
});
