// Two people chat in headless Chromium (the web client served by chatd) with a third on a
// raw TCP connection; the server is killed and restarted under the pages, and every page must
// then show every message exactly once, in order, its unsent message delivered once.
//
// Run by tests/browser.rs, which owns the chatd process:
//   node chat.mjs --http http://127.0.0.1:PORT --tcp 127.0.0.1:PORT --screenshot FILE
// It prints `RESTART` when it wants the server killed and restarted on the same addresses,
// and waits for `RESTARTED` on stdin. It prints `PASS` last; anything else is a failure.

import { chromium } from 'playwright-core';
import net from 'node:net';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => (i % 2 ? pairs : [...pairs, [arg.replace(/^--/, ''), all[i + 1]]]), []),
);
const STEP = 10_000; // any one wait
const HOSTILE = '<img src=x onerror=alert(1)>';

const stdin = readline.createInterface({ input: process.stdin });
const stdinLines = [];
const stdinWaiters = [];
stdin.on('line', (line) => (stdinWaiters.length ? stdinWaiters.shift()(line) : stdinLines.push(line)));
const nextStdinLine = () => new Promise((resolve) => (stdinLines.length ? resolve(stdinLines.shift()) : stdinWaiters.push(resolve)));

function log(...parts) {
  console.error('[browser test]', ...parts);
}

/** A line-protocol client on a raw TCP socket, as `nc` would be. */
class Tcp {
  constructor(address) {
    const [host, port] = address.split(':');
    this.lines = [];
    this.waiters = [];
    this.buffer = '';
    this.socket = net.connect(Number(port), host);
    this.socket.setEncoding('utf8');
    this.socket.on('data', (data) => {
      this.buffer += data;
      let at;
      while ((at = this.buffer.indexOf('\n')) >= 0) {
        const line = this.buffer.slice(0, at);
        this.buffer = this.buffer.slice(at + 1);
        this.lines.push(line);
        this.waiters = this.waiters.filter((waiter) => !waiter());
      }
    });
    this.socket.on('error', () => {});
  }

  send(line) {
    this.socket.write(line + '\n');
  }

  /** Waits for a line matching `test` (anywhere after the last one taken). */
  expect(test, what) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`TCP: no ${what} in ${STEP} ms; saw ${JSON.stringify(this.lines.slice(-10))}`)), STEP);
      const check = () => {
        const index = this.lines.findIndex((line) => test(line));
        if (index < 0) return false;
        const [line] = this.lines.splice(0, index + 1).slice(-1);
        clearTimeout(timer);
        resolve(line);
        return true;
      };
      if (!check()) this.waiters.push(check);
    });
  }

  close() {
    this.socket.destroy();
  }
}

async function login(page, name) {
  await page.goto(args.http);
  await page.fill('#login-name', name);
  await page.click('#login-button');
  await page.waitForSelector('body[data-connection="online"]', { timeout: STEP });
}

async function joinRoom(page, room) {
  await page.fill('#join-input', room);
  await page.press('#join-input', 'Enter');
  await page.waitForSelector(`#room-list li.active[data-room="${room}"]`, { timeout: STEP });
}

async function say(page, body) {
  await page.fill('#composer-input', body);
  await page.press('#composer-input', 'Enter');
}

/** The messages a page shows for the active room: [seq, id, sender, body]. */
function shown(page) {
  return page.$$eval('#message-list li.msg:not(.pending)', (items) =>
    items.map((item) => [Number(item.dataset.seq), item.dataset.id, item.querySelector('.sender').textContent, item.querySelector('.body').textContent]),
  );
}

async function waitForBody(page, body) {
  await page.waitForFunction(
    (text) => [...document.querySelectorAll('#message-list li.msg:not(.pending) .body')].some((node) => node.textContent === text),
    body,
    { timeout: STEP },
  );
}

/** The room's whole history as the server has it, read over TCP: [seq, id, sender, body]. */
async function history(tcp, room) {
  tcp.send(`@all HISTORY ${room} 1000`);
  const rows = [];
  for (;;) {
    const line = await tcp.expect((l) => l.startsWith('@all '), 'HISTORY reply');
    if (line.startsWith('@all OK HISTORY')) return rows;
    const parts = line.split(' ');
    // @all MSG room seq id sent_at sender body...
    rows.push([Number(parts[3]), parts[4], parts[6], parts.slice(7).join(' ')]);
  }
}

async function main() {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'chatd-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1100, height: 700 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const failures = [];
  try {
    const alice = await context.newPage();
    const bob = await context.newPage();
    for (const page of [alice, bob]) {
      page.on('dialog', (dialog) => {
        failures.push(`a dialog opened: ${dialog.message()}`);
        dialog.dismiss();
      });
      page.on('pageerror', (error) => failures.push(`page error: ${error.message}`));
    }
    await login(alice, 'alice');
    await joinRoom(alice, 'lobby');
    await login(bob, 'bob');
    await joinRoom(bob, 'lobby');
    log('two browsers in the room');

    const carol = new Tcp(args.tcp);
    await carol.expect((l) => l.startsWith('HELLO '), 'HELLO');
    carol.send('LOGIN carol');
    await carol.expect((l) => l === 'OK LOGIN carol', 'OK LOGIN');
    carol.send('JOIN lobby');
    await carol.expect((l) => l.startsWith('OK JOIN lobby '), 'OK JOIN');

    await say(alice, 'hello from the browser');
    await say(bob, HOSTILE);
    carol.send('SEND lobby hello from nc');
    for (const page of [alice, bob]) {
      for (const body of ['hello from the browser', HOSTILE, 'hello from nc']) await waitForBody(page, body);
    }
    await carol.expect((l) => l.endsWith(` bob ${HOSTILE}`), 'the hostile message over TCP');
    // Shown as text: no element was made from it, and no script ran (no dialog).
    const images = await alice.$$eval('#messages img', (nodes) => nodes.length);
    if (images) failures.push(`the message made ${images} <img> element(s)`);
    log('three people chatted; markup shown as text');

    // Typing and read receipts between the two browsers.
    await bob.type('#composer-input', 'typing a', { delay: 20 });
    await alice.waitForFunction(() => document.getElementById('typing').textContent === 'bob is typing…', null, { timeout: STEP });
    await bob.fill('#composer-input', '');
    await alice.waitForFunction(() => [...document.querySelectorAll('.seen')].some((n) => n.textContent.includes('bob')), null, { timeout: STEP });
    log('typing indicator and read receipts seen');

    // Unread counts and direct messages: bob talks in another room, carol DMs alice.
    await joinRoom(alice, 'side');
    await joinRoom(bob, 'side');
    await alice.click('#room-list li[data-room="lobby"]');
    await say(bob, 'over here');
    await bob.click('#room-list li[data-room="lobby"]');
    carol.send('DM alice psst');
    await alice.waitForFunction(() => {
      const badge = (room) => document.querySelector(`li[data-room="${room}"] .badge`)?.textContent;
      return badge('side') === '1' && badge('dm:alice:carol') === '1';
    }, null, { timeout: STEP });
    await alice.click('li[data-room="dm:alice:carol"]');
    await waitForBody(alice, 'psst');
    await alice.waitForSelector('li[data-room="dm:alice:carol"]:not(:has(.badge))', { timeout: STEP });
    await alice.click('#room-list li[data-room="lobby"]');
    log('unread badges and a direct message');

    // A second tab of alice's is a second device: it gets her rooms and her messages reach
    // the first tab.
    const aliceTab = await context.newPage();
    await login(aliceTab, 'alice');
    await aliceTab.waitForSelector('#room-list li.active[data-room="lobby"]', { timeout: STEP });
    await waitForBody(aliceTab, 'hello from nc');
    await say(aliceTab, 'from my second tab');
    await waitForBody(alice, 'from my second tab');
    await aliceTab.close();
    log('a second tab is a second device');

    // The server dies under the pages (kill -9) and comes back on the same addresses.
    console.log('RESTART');
    await alice.waitForSelector('body:not([data-connection="online"])', { timeout: STEP });
    await say(alice, 'written while the server was down');
    const restarted = await nextStdinLine();
    if (restarted !== 'RESTARTED') throw new Error(`expected RESTARTED, got ${restarted}`);
    carol.close();
    const dave = new Tcp(args.tcp);
    await dave.expect((l) => l.startsWith('HELLO '), 'HELLO after the restart');
    dave.send('LOGIN carol device=two');
    await dave.expect((l) => l === 'OK LOGIN carol', 'OK LOGIN after the restart');
    for (let i = 1; i <= 5; i++) dave.send(`SEND lobby after the restart ${i}`);
    for (const page of [alice, bob]) {
      await page.waitForSelector('body[data-connection="online"]', { timeout: STEP });
      await waitForBody(page, 'after the restart 5');
      await waitForBody(page, 'written while the server was down');
      await page.waitForFunction(() => !document.querySelector('#message-list li.pending'), null, { timeout: STEP });
    }
    log('both pages resumed');

    const truth = await history(dave, 'lobby');
    for (const [name, page] of [['alice', alice], ['bob', bob]]) {
      const rows = await shown(page);
      const same = JSON.stringify(rows) === JSON.stringify(truth);
      if (!same) failures.push(`${name}'s page differs from the room's history:\n  page: ${JSON.stringify(rows)}\n  room: ${JSON.stringify(truth)}`);
    }
    const offline = truth.filter((row) => row[3] === 'written while the server was down');
    if (offline.length !== 1) failures.push(`the message written offline is in the room ${offline.length} times`);
    log(`${truth.length} messages, each shown once and in order on both pages`);

    fs.mkdirSync(path.dirname(args.screenshot), { recursive: true });
    await alice.screenshot({ path: args.screenshot });
    // The same chat on a phone-sized screen: the room list and members fold away.
    await alice.setViewportSize({ width: 390, height: 760 });
    await alice.waitForFunction(() => document.getElementById('sidebar').getBoundingClientRect().right <= 0, null, { timeout: STEP });
    await alice.waitForTimeout(300); // the members panel's slide, for the picture only
    const narrow = args.screenshot.replace(/\.png$/, '-narrow.png');
    await alice.screenshot({ path: narrow });
    log('screenshots', args.screenshot, narrow);
    dave.close();
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
  if (failures.length) {
    for (const failure of failures) console.error('FAIL', failure);
    process.exit(1);
  }
  console.log('PASS');
  process.exit(0);
}

main().catch((error) => {
  console.error('FAIL', error.stack || error);
  process.exit(1);
});
