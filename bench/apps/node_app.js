'use strict';
/*
 * The benchmark's contract app written with the official Node SDK, @jambonz/node-client-ws.
 *   node bench/apps/node_app.js PORT
 * session:new -> [say "Hello from jambonz", gather(speech+digits, /gather, timeout 10, say prompt)];
 * verb:hook /gather -> [say "You said: <transcript>", hangup]. Serves ws://127.0.0.1:PORT/ivr.
 */
const {createServer} = require('http');
const {createEndpoint} = require('@jambonz/node-client-ws');

const port = parseInt(process.argv[2], 10);
const server = createServer();
const makeService = createEndpoint({server});
const svc = makeService({path: '/ivr'});

svc.on('session:new', (session) => {
  session
    .on('/gather', (evt) => {
      const alt = evt.speech && evt.speech.alternatives && evt.speech.alternatives[0];
      if (alt && alt.transcript) session.say({text: `You said: ${alt.transcript}`}).hangup();
      else if (evt.digits) session.say({text: `You pressed: ${evt.digits}`}).hangup();
      else session.hangup();
      session.reply();
    })
    .on('close', () => {})
    .on('error', () => {});
  session
    .say({text: 'Hello from jambonz'})
    .gather({
      input: ['speech', 'digits'],
      actionHook: '/gather',
      timeout: 10,
      say: {text: 'Say something'},
    })
    .send();
});

server.listen(port, '127.0.0.1');
