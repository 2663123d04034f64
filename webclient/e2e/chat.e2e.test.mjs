// End-to-end: two people in two browser contexts (headless Chromium from
// Debian, driven by playwright-core) against a real Parley on real services.
// Run by scripts/web-e2e.sh, which starts the server and tells us where:
//   PARLEY_E2E_URL            the server (serving the built app), http: or https:
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
const secret = `secret ${suffix}`;
const history = `history ${suffix}`;
const PASSWORD = 'correct-horse-battery';

const dirs = [];
async function browser(viewport) {
  const dir = mkdtempSync(join(tmpdir(), 'parley-e2e-chromium-'));
  dirs.push(dir);
  const ctx = await chromium.launchPersistentContext(dir, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: CHROMIUM_ARGS,
    // The TLS pass of scripts/web-e2e.sh serves a self-signed certificate.
    ignoreHTTPSErrors: URL.startsWith('https:'),
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

async function createPrivateRoom(page, name) {
  await page.getByRole('button', { name: 'New room' }).first().click();
  await page.getByLabel('Room name').fill(name);
  await page.getByRole('radio', { name: /Private/ }).check();
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

/** The open room's id (from the URL). */
async function roomIdOf(page) {
  const m = /#\/room\/([^/?#]+)/.exec(page.url());
  assert.ok(m, `no room open: ${page.url()}`);
  return decodeURIComponent(m[1]);
}

/** Opens the members panel of the open room (if it is not open yet). */
async function membersPanel(page) {
  const panel = page.locator('#members-panel');
  if ((await panel.count()) === 0) await page.getByRole('button', { name: 'Members', exact: true }).click();
  await panel.waitFor();
  return panel;
}

/** Leaves the open room through the members panel and its confirmation. */
async function leaveOpenRoom(page) {
  const panel = await membersPanel(page);
  await panel.getByRole('button', { name: 'Leave room' }).click();
  const dialog = page.getByRole('dialog');
  await dialog.getByText('It disappears from your rooms').waitFor();
  await dialog.getByRole('button', { name: 'Leave room' }).click();
  await dialog.waitFor({ state: 'detached' });
}

/** Calls the REST API (the server's /v1 gateway) with the page's session. */
async function api(page, method, path, body) {
  return page.evaluate(
    async ({ method, path, body }) => {
      const s = JSON.parse(localStorage.getItem('parley.session'));
      const r = await fetch(path, {
        method,
        headers: { authorization: `Bearer ${s.accessToken}`, 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      return { status: r.status, body: await r.json().catch(() => null) };
    },
    { method, path, body },
  );
}

/**
 * Sends the bodies one by one with the unary SendMessage (its REST mapping),
 * from the page with its session; paced by the server's rate limit: a 429
 * is retried with the same client_msg_id (never a second copy).
 */
async function sendMany(page, roomId, bodies) {
  return page.evaluate(
    async ({ roomId, bodies }) => {
      const token = () => JSON.parse(localStorage.getItem('parley.session')).accessToken;
      let limited = 0;
      for (let i = 0; i < bodies.length; i++) {
        const r = await fetch(`/v1/rooms/${encodeURIComponent(roomId)}/messages`, {
          method: 'POST',
          headers: { authorization: `Bearer ${token()}`, 'content-type': 'application/json' },
          body: JSON.stringify({ clientMsgId: `bulk-${roomId}-${i}`, body: bodies[i] }),
        });
        if (r.status === 429 || r.status === 503) {
          if (++limited > 2000) throw new Error('still rate limited');
          await new Promise((res) => setTimeout(res, 60));
          i--;
          continue;
        }
        if (!r.ok) throw new Error(`send ${i}: HTTP ${r.status} ${await r.text()}`);
      }
      return limited;
    },
    { roomId, bodies },
  );
}

/** Whether a bubble with exactly `text` is inside the message list's visible area. */
async function inView(page, text) {
  return page.evaluate((text) => {
    const list = document.querySelector('.messages');
    const b = [...document.querySelectorAll('.messages .bubble')].find((el) => el.textContent === text);
    if (!list || !b) return false;
    const l = list.getBoundingClientRect();
    const r = b.getBoundingClientRect();
    return r.top >= l.top - 1 && r.bottom <= l.bottom + 1;
  }, text);
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

  test('a private room: Ann adds Bob by username, Bob reads and writes, then leaves it', async () => {
    // Bob is on the phone layout since the screenshots; Ann on the desktop.
    await createPrivateRoom(A.page, secret);
    await send(A.page, 'Only for invited people');
    await A.page.locator('.group.mine .status.sent').last().waitFor({ timeout: 5000 });
    const panel = await membersPanel(A.page);
    const addMember = async (username) => {
      await panel.getByRole('button', { name: 'Add member' }).click();
      const dialog = A.page.getByRole('dialog', { name: 'Add member' });
      await dialog.getByLabel('Username').fill(username);
      await dialog.getByRole('button', { name: 'Add', exact: true }).click();
      return dialog;
    };
    // errors in words: NotFound names the user, InvalidArgument gives the field's message
    let dialog = await addMember(`nobody${suffix}`);
    await dialog.getByText(`No user named “nobody${suffix}”.`).waitFor();
    await dialog.getByLabel('Username').fill('no way!');
    await dialog.getByRole('button', { name: 'Add', exact: true }).click();
    const invalid = dialog.locator('#add-member-error');
    await until('the field message', async () => /^Must be 3-32 characters/.test(await invalid.innerText()));
    await dialog.getByRole('button', { name: 'Cancel' }).click();
    await dialog.waitFor({ state: 'detached' });
    // and Bob by his username (with an @, in capitals: as people type it)
    dialog = await addMember(`@${bob.toUpperCase()}`);
    await dialog.waitFor({ state: 'detached' });
    await panel.getByRole('status').getByText(`Added ${bob}.`).waitFor();
    await panel.locator('li', { hasText: `@${bob}` }).waitFor({ timeout: 5000 });

    // Bob sees the room in his list when he comes back to the tab (no push for that)
    await B.page.getByRole('button', { name: 'Back to rooms' }).click();
    const item = B.page.locator('.room-item', { hasText: secret });
    await until('the private room in bob\'s list', async () => {
      if (await item.count()) return true;
      await B.page.evaluate(() => window.dispatchEvent(new Event('focus')));
      return false;
    }, 15_000, 500);
    await item.getByRole('img', { name: 'private' }).waitFor();
    // he reads its history and writes
    await openRoom(B.page, secret);
    await sees(B.page, 'Only for invited people', 5000);
    await send(B.page, 'Thanks for adding me!');
    await sees(A.page, 'Thanks for adding me!', 2000);
    const bobRow = panel.locator('li', { hasText: `@${bob}` });
    await until('bob online in the private room', async () => (await bobRow.getAttribute('data-online')) === 'true', 10_000);

    // Bob leaves: confirmed, gone from his list, back to the list (phone)
    await leaveOpenRoom(B.page);
    await B.page.getByRole('navigation', { name: 'Your rooms' }).waitFor();
    assert.ok(await B.page.getByRole('navigation', { name: 'Your rooms' }).isVisible());
    assert.ok(B.page.url().endsWith('#/'), B.page.url());
    await item.waitFor({ state: 'detached', timeout: 5000 });
    // unsubscribed on the stream (he is offline there), and no longer a member for Ann
    await bobRow.waitFor({ state: 'detached', timeout: 10_000 });
    // and ListRooms agrees after a reload
    await B.page.reload();
    await B.page.locator('.room-item', { hasText: general }).waitFor();
    assert.equal(await item.count(), 0, 'the left room stays gone after a reload');
    const listed = await api(B.page, 'GET', '/v1/rooms');
    assert.equal(listed.status, 200);
    const names = (listed.body.rooms ?? []).map((r) => r.name);
    assert.ok(names.includes(general) && !names.includes(secret), `ListRooms: ${JSON.stringify(names)}`);
    // Ann still has it and can write to it
    await send(A.page, 'Just us again');
    await sees(A.page, 'Just us again', 2000);
  });

  test('leaving a room on the desktop shows the first room of the list', async () => {
    await openRoom(A.page, random);
    await leaveOpenRoom(A.page);
    await A.page.locator('.room-item', { hasText: random }).waitFor({ state: 'detached', timeout: 5000 });
    const first = A.page.locator('.room-item').first();
    const title = await first.getAttribute('data-room');
    await A.page.getByRole('heading', { level: 1, name: title }).waitFor();
    assert.equal(await first.getAttribute('aria-current'), 'page');
    // Bob is still in it: nothing changed for him
    assert.equal(await B.page.locator('.room-item', { hasText: random }).count(), 1);
  });

  test('scroll-back: 120 messages load page by page, in order, once each', async () => {
    await B.page.setViewportSize({ width: 1280, height: 800 });
    await createRoom(A.page, history);
    const roomId = await roomIdOf(A.page);
    const bodies = Array.from({ length: 120 }, (_, i) => `history ${String(i + 1).padStart(3, '0')}`);
    const t0 = Date.now();
    const limited = await sendMany(A.page, roomId, bodies);
    console.log(`sent 120 messages in ${Date.now() - t0} ms (${limited} rate-limited attempts retried)`);
    await sees(A.page, 'history 120', 10_000);
    // stored history has caught up (the persister writes asynchronously)
    await until('120 messages stored', async () => {
      const r = await api(A.page, 'GET', `/v1/rooms/${encodeURIComponent(roomId)}/messages?pageSize=1`);
      return r.status === 200 && r.body.messages?.[0]?.body === 'history 120';
    }, 20_000, 200);

    let pages = 0;
    const onRequest = (r) => {
      if (r.url().endsWith('/parley.v1.ChatService/ListMessages')) pages++;
    };
    B.page.on('request', onRequest);
    try {
      await joinRoom(B.page, history);
      await sees(B.page, 'history 120', 5000);
      assert.equal(await B.page.locator('.messages .bubble', { hasText: 'history 001' }).count(), 0, 'only the newest page at first');
      // at the bottom: read
      const badge = B.page.locator('.room-item', { hasText: history }).locator('.badge');
      await badge.waitFor({ state: 'detached', timeout: 5000 });
      // scroll to the top until the first message shows
      const list = B.page.locator('.messages');
      await until('the first message in view after scrolling back', async () => {
        if (await inView(B.page, 'history 001')) return true;
        await list.evaluate((el) => {
          el.scrollTop = 0;
        });
        return false;
      }, 30_000, 250);
      await B.page.getByText('This is the beginning of the room.').waitFor();
    } finally {
      B.page.off('request', onRequest);
    }
    assert.ok(pages >= 3, `the history came in pages (${pages} ListMessages calls)`);
    assert.equal(await B.page.locator('.room-item', { hasText: history }).locator('.badge').count(), 0, 'still read after scrolling back');
    const shown = (await bubbles(B.page)).filter((t) => t.startsWith('history '));
    assertNoDuplicates(shown, 'bob');
    assert.deepEqual(shown, bodies, 'every message once, in order');
    const seqs = await B.page.locator('.messages .bubble-row[data-seq]').evaluateAll((els) => els.map((e) => Number(e.dataset.seq)));
    assert.deepEqual(seqs, Array.from({ length: 120 }, (_, i) => seqs[0] + i), 'consecutive seqs, ascending');
  });

  test('log out returns to the sign-in screen', async () => {
    await A.page.getByRole('button', { name: 'Log out' }).click();
    await A.page.getByRole('tab', { name: 'Log in' }).waitFor();
    await A.page.reload();
    await A.page.getByRole('tab', { name: 'Log in' }).waitFor();
  });
});
