// End-to-end: two people in two browser contexts (headless Chromium from
// Debian, driven by playwright-core) against a real Parley on real services.
// Run by scripts/web-e2e.sh, which starts the server and tells us where:
//   PARLEY_E2E_URL            the server (serving the built app)
//   PARLEY_E2E_SERVER_SH      starts the server again with the same flags
//   PARLEY_E2E_SERVER_PIDFILE its pid (rewritten on every start)
//   PARLEY_E2E_SCREENSHOTS    where to save the layout screenshots
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const URL = process.env.PARLEY_E2E_URL;
const SERVER_SH = process.env.PARLEY_E2E_SERVER_SH;
const PIDFILE = process.env.PARLEY_E2E_SERVER_PIDFILE;
const SHOTS = process.env.PARLEY_E2E_SCREENSHOTS;
if (!URL) throw new Error('PARLEY_E2E_URL is not set: run scripts/web-e2e.sh');

const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

const suffix = Date.now().toString(36).slice(-5);
const ann = `ann${suffix}`;
const bob = `bob${suffix}`;
const general = `general ${suffix}`;
const random = `random ${suffix}`;
const PASSWORD = 'correct-horse-battery';

const dirs = [];
async function browser(viewport) {
  const dir = mkdtempSync(join(tmpdir(), 'parley-e2e-chromium-'));
  dirs.push(dir);
  const ctx = await chromium.launchPersistentContext(dir, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: CHROMIUM_ARGS,
    viewport,
    locale: 'en-US',
    timezoneId: 'UTC',
  });
  const page = ctx.pages()[0] ?? (await ctx.newPage());
  page.on('pageerror', (e) => console.error('[page error]', e.message));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/WebSocket|ERR_CONNECTION_REFUSED|Failed to load resource/.test(m.text())) console.error('[console]', m.text());
  });
  return { ctx, page };
}

/** Polls fn until it returns a truthy value or the timeout passes. */
async function until(what, fn, timeout = 10_000, every = 50) {
  const start = Date.now();
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() - start > timeout) throw new Error(`timed out after ${timeout} ms waiting for ${what} (last: ${last})`);
    await new Promise((r) => setTimeout(r, every));
  }
}

const bubbles = (page) => page.locator('.messages .bubble').allInnerTexts();
const composer = (page) => page.getByLabel('Message', { exact: true });

async function send(page, text) {
  await composer(page).fill(text);
  await composer(page).press('Enter');
}

/** Waits until `text` shows in the open room; returns the ms it took. */
async function sees(page, text, timeout) {
  const t0 = Date.now();
  await page.locator('.messages .bubble', { hasText: text }).first().waitFor({ state: 'visible', timeout });
  return Date.now() - t0;
}

async function signUp(page, username) {
  await page.goto(URL);
  await page.getByRole('tab', { name: 'Sign up' }).click();
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
  await page.getByLabel('Confirm password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.getByRole('navigation', { name: 'Your rooms' }).waitFor();
}

async function createRoom(page, name) {
  await page.getByRole('button', { name: 'New room' }).first().click();
  await page.getByLabel('Room name').fill(name);
  await page.getByRole('button', { name: 'Create room' }).click();
  await page.getByRole('heading', { level: 1, name }).waitFor();
}

async function joinRoom(page, name) {
  await page.getByRole('button', { name: 'Browse', exact: true }).click();
  await page.getByRole('button', { name: `Join ${name}` }).click();
  await page.getByRole('heading', { level: 1, name }).waitFor();
}

async function openRoom(page, name) {
  await page.locator('.room-item', { hasText: name }).click();
  await page.getByRole('heading', { level: 1, name }).waitFor();
}

function serverPid() {
  return Number(readFileSync(PIDFILE, 'utf8').trim());
}

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function stopServer() {
  const pid = serverPid();
  process.kill(pid, 'SIGTERM');
  await until('the server to exit', () => !alive(pid), 30_000);
}

async function startServer() {
  const child = spawn('bash', [SERVER_SH], { detached: true, stdio: 'ignore' });
  child.unref();
  await until('the server to be ready', async () => (await fetch(`${URL}/readyz`)).ok, 60_000, 200);
}

function assertNoDuplicates(list, who) {
  const seen = new Set();
  for (const t of list) {
    assert.ok(!seen.has(t), `${who} shows "${t}" twice: ${JSON.stringify(list)}`);
    seen.add(t);
  }
}

describe('Parley web app', { concurrency: false }, () => {
  let A; // ann, desktop
  let B; // bob, desktop too until the phone screenshots

  before(async () => {
    A = await browser({ width: 1280, height: 800 });
    B = await browser({ width: 1280, height: 800 });
  });

  after(async () => {
    await A?.ctx.close();
    await B?.ctx.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  test('validation errors show next to the fields', async () => {
    const { page } = A;
    await page.goto(URL);
    await page.getByRole('tab', { name: 'Sign up' }).click();
    await page.getByLabel('Username').fill('X');
    await page.getByLabel('Password', { exact: true }).fill('short');
    await page.getByRole('button', { name: 'Create account' }).click();
    await page.locator('#auth-username-error').waitFor();
    assert.match(await page.locator('#auth-username-error').innerText(), /3 to 32 characters/);
    assert.match(await page.locator('#auth-password-error').innerText(), /at least 8/);
    // a wrong password is reported in words
    await page.getByRole('tab', { name: 'Log in' }).click();
    await page.getByLabel('Username').fill('nobody-here');
    await page.getByLabel('Password', { exact: true }).fill('whatever-password');
    await page.getByRole('button', { name: 'Log in' }).last().click();
    await page.getByText('Wrong username or password.').waitFor();
  });

  test('two users sign up; one creates a room, the other joins it', async () => {
    await signUp(A.page, ann);
    await signUp(B.page, bob);
    await createRoom(A.page, general);
    await joinRoom(B.page, general);
  });

  test('messages flow both ways within a second', async () => {
    await send(A.page, 'Hello Bob! Grüße, ça va? 👋');
    const t1 = await sees(B.page, 'Hello Bob! Grüße, ça va? 👋', 1000);
    await send(B.page, 'Hi Ann, good to see you here.');
    const t2 = await sees(A.page, 'Hi Ann, good to see you here.', 1000);
    console.log(`delivery: ann→bob ${t1} ms, bob→ann ${t2} ms`);
    // own messages end up acknowledged ("Sent")
    await A.page.locator('.group.mine .status.sent').first().waitFor({ timeout: 5000 });
    // bodies are text, never markup
    await send(A.page, '<b>not bold</b> & <script>alert(1)</script>');
    await sees(B.page, '<b>not bold</b>', 1000);
    assert.equal(await B.page.locator('.messages .bubble b').count(), 0);
    // Shift+Enter makes a new line, Enter sends
    await composer(B.page).fill('line one');
    await composer(B.page).press('Shift+Enter');
    await composer(B.page).pressSequentially('line two');
    await composer(B.page).press('Enter');
    await sees(A.page, 'line two', 1000);
    assert.ok((await bubbles(A.page)).includes('line one\nline two'));
  });

  test('the typing indicator and the online list show', async () => {
    await composer(B.page).pressSequentially('I am typing a long answer', { delay: 60 });
    await A.page.locator('.typing', { hasText: `${bob} is typing` }).waitFor({ timeout: 5000 });
    await composer(B.page).fill('');
    await A.page.getByRole('button', { name: 'Members' }).click();
    const bobRow = A.page.locator('#members-panel li', { hasText: `@${bob}` });
    await bobRow.waitFor();
    await until('bob to show online', async () => (await bobRow.getAttribute('data-online')) === 'true', 10_000);
    await until('two online', async () => /2 online/.test(await A.page.getByTestId('online-count').innerText()), 10_000);
    // the typing indicator goes away by itself
    await A.page.locator('.typing', { hasText: 'is typing' }).waitFor({ state: 'detached', timeout: 12_000 });
  });

  test('after a reload the history is there', async () => {
    const beforeReload = await bubbles(A.page);
    await A.page.reload();
    await A.page.getByRole('heading', { level: 1, name: general }).waitFor();
    await until('history after reload', async () => JSON.stringify(await bubbles(A.page)) === JSON.stringify(beforeReload), 10_000);
  });

  test('a rejected access token is refreshed without the user noticing', async () => {
    const { page } = A;
    const before = await page.evaluate(() => JSON.parse(localStorage.getItem('parley.session')));
    // As if the access token had expired (the server no longer accepts it).
    await page.evaluate(() => {
      const s = JSON.parse(localStorage.getItem('parley.session'));
      s.accessToken = 'expired.' + s.accessToken.slice(8);
      localStorage.setItem('parley.session', JSON.stringify(s));
    });
    await page.reload();
    await page.getByRole('heading', { level: 1, name: general }).waitFor();
    await send(page, 'token refreshed');
    await sees(B.page, 'token refreshed', 5000);
    const after = await page.evaluate(() => JSON.parse(localStorage.getItem('parley.session')));
    assert.notEqual(after.accessToken, before.accessToken);
    assert.notEqual(after.refreshToken, before.refreshToken, 'the refresh token rotated');
    assert.equal(await page.getByRole('tab', { name: 'Log in' }).count(), 0, 'still signed in');
  });

  test('the server restarts mid-conversation: nothing lost, nothing doubled', async () => {
    await send(A.page, 'before restart');
    await sees(B.page, 'before restart', 2000);
    await stopServer();
    // both notice and say so
    await A.page.getByText('Reconnecting…').waitFor({ timeout: 15_000 });
    await B.page.getByText('Reconnecting…').waitFor({ timeout: 15_000 });
    // typed while the server is down: kept as "sending" and sent on reconnect
    await send(B.page, 'sent during the outage');
    await B.page.locator('.bubble-row.pending', { hasText: 'sent during the outage' }).waitFor();
    await startServer();
    await A.page.getByText('Reconnecting…').waitFor({ state: 'detached', timeout: 20_000 });
    await B.page.getByText('Reconnecting…').waitFor({ state: 'detached', timeout: 20_000 });
    await sees(A.page, 'sent during the outage', 15_000);
    await send(A.page, 'after restart');
    await sees(B.page, 'after restart', 2000);
    await send(B.page, 'still here');
    await sees(A.page, 'still here', 2000);
    await until('no pending messages', async () => (await B.page.locator('.bubble-row.pending').count()) === 0, 15_000);
    const a = await bubbles(A.page);
    const b = await bubbles(B.page);
    assertNoDuplicates(a, 'ann');
    assertNoDuplicates(b, 'bob');
    assert.deepEqual(a, b, 'both see the same conversation in the same order');
    const tail = a.slice(-4);
    assert.ok(a.includes('token refreshed'));
    assert.deepEqual(tail, ['before restart', 'sent during the outage', 'after restart', 'still here']);
    // and a reload agrees with what was on screen (stored history, same order)
    await B.page.reload();
    await B.page.getByRole('heading', { level: 1, name: general }).waitFor();
    await until('history after restart', async () => JSON.stringify(await bubbles(B.page)) === JSON.stringify(a), 15_000);
  });

  test('an unread count appears for another room and clears when it is opened', async () => {
    await createRoom(A.page, random);
    await joinRoom(B.page, random);
    await openRoom(B.page, general); // bob looks at general
    await send(A.page, 'over here in random');
    await send(A.page, 'two unread now');
    const badge = B.page.locator('.room-item', { hasText: random }).locator('.badge');
    await until('bob\'s unread badge says 2', async () => (await badge.innerText().catch(() => '')) === '2', 5000);
    assert.equal(await B.page.locator('.room-item', { hasText: general }).locator('.badge').count(), 0);
    await openRoom(B.page, random);
    await sees(B.page, 'two unread now', 5000);
    await B.page.locator('.unread-marker').waitFor();
    await badge.waitFor({ state: 'detached', timeout: 5000 });
    await new Promise((r) => setTimeout(r, 500)); // the read marker is on its way to the server
    // the read position is stored: still read after a reload
    await openRoom(B.page, general);
    await B.page.reload();
    await B.page.getByRole('heading', { level: 1, name: general }).waitFor();
    await B.page.locator('.room-item', { hasText: random }).waitFor();
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(await badge.count(), 0, 'unread stays cleared after a reload');
  });

  test('screenshots of the desktop and phone layouts', async () => {
    if (!SHOTS) return;
    mkdirSync(SHOTS, { recursive: true });
    // desktop: ann in general with the members panel
    await openRoom(A.page, general);
    await send(A.page, 'Screenshots coming up — say cheese!');
    try {
      await sees(B.page, 'say cheese', 2000);
    } catch (e) {
      await B.page.screenshot({ path: join(process.env.PARLEY_E2E_TMP ?? tmpdir(), 'fail-bob.png') });
      await A.page.screenshot({ path: join(process.env.PARLEY_E2E_TMP ?? tmpdir(), 'fail-ann.png') });
      throw e;
    }
    await composer(B.page).pressSequentially('Cheese', { delay: 20 });
    await A.page.locator('.typing', { hasText: 'is typing' }).waitFor({ timeout: 5000 });
    if ((await A.page.locator('#members-panel').count()) === 0) await A.page.getByRole('button', { name: 'Members' }).click();
    await A.page.screenshot({ path: join(SHOTS, 'desktop.png') });
    await composer(B.page).fill('');
    // phone: bob's room list and room as separate screens
    await B.page.setViewportSize({ width: 390, height: 844 });
    await B.page.getByRole('button', { name: 'Back to rooms' }).click();
    await B.page.getByRole('navigation', { name: 'Your rooms' }).waitFor();
    await send(A.page, 'Sent while Bob looks at his room list');
    await B.page.locator('.room-item', { hasText: general }).locator('.badge').waitFor({ timeout: 5000 });
    await until('no horizontal scroll (rooms)', async () => B.page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth));
    await B.page.screenshot({ path: join(SHOTS, 'phone-rooms.png') });
    await openRoom(B.page, general);
    await B.page.locator('.unread-marker').waitFor();
    await sees(B.page, 'Sent while Bob looks', 2000);
    // few unread messages: the room opens at the bottom, so they are read
    await B.page.locator('.room-item', { hasText: general }).locator('.badge').waitFor({ state: 'detached', timeout: 5000 }).catch(async (e) => {
      console.log(await B.page.evaluate(() => { const el = document.querySelector('.messages'); return JSON.stringify({ st: el.scrollTop, sh: el.scrollHeight, ch: el.clientHeight, vis: document.visibilityState, focus: document.hasFocus() }); }));
      throw e;
    });
    assert.ok(await B.page.getByRole('button', { name: 'Back to rooms' }).isVisible());
    assert.equal(await B.page.getByRole('navigation', { name: 'Your rooms' }).isVisible(), false);
    await until('no horizontal scroll (room)', async () => B.page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth));
    await B.page.screenshot({ path: join(SHOTS, 'phone-room.png') });
  });

  test('log out returns to the sign-in screen', async () => {
    await A.page.getByRole('button', { name: 'Log out' }).click();
    await A.page.getByRole('tab', { name: 'Log in' }).waitFor();
    await A.page.reload();
    await A.page.getByRole('tab', { name: 'Log in' }).waitFor();
  });
});
