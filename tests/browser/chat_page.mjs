// Real-browser test of the aijobs web chat page (gateway/web/index.html).
//
//   node tests/browser/chat_page.mjs http://127.0.0.1:8080 /tmp/chat.png
//
// Drives Debian's Chromium (/usr/bin/chromium, or $AIJOBS_CHROMIUM) with playwright-core
// against a running aijobs-gateway (with a scheduler and a sim worker behind it):
//   1. asks a question and sees the answer stream in while the job is still running;
//   2. clicks "Reconnect" mid-stream and checks the page resumed with ?last_event_id=N;
//   3. waits for SUCCEEDED and checks the text shown equals result.text from
//      GET /v1/jobs/{id} exactly (no duplicated or lost tokens);
//   4. asks a follow-up and checks the job's input carried the previous exchange;
//   5. cancels a third job mid-stream and sees CANCELLED;
//   6. checks the page fits a narrow (phone) screen, then takes a screenshot.
// Exit code 0 on success; 1 with "FAIL: <reason>" on stderr otherwise.

import {existsSync, readFileSync, statSync} from 'node:fs';

const USAGE = 'usage: node chat_page.mjs <gateway url> <screenshot.png>';
const CHROMIUM = process.env.AIJOBS_CHROMIUM || '/usr/bin/chromium';
const OVERALL_TIMEOUT_MS = Number(process.env.AIJOBS_BROWSER_TEST_TIMEOUT_MS || 150000);
// Slow enough that the test can observe the stream and act mid-way (about 4 s per answer).
const SIM = {sim_tokens: 60, sim_tokens_per_s: 15, sim_ttft_ms: 0};
const TERMINAL = ['SUCCEEDED', 'FAILED', 'CANCELLED'];

class TestFailure extends Error {}
function check(cond, message) {
  if (!cond) throw new TestFailure(message);
}
function log(...args) {
  console.log('[chat_page]', ...args);
}

async function loadPlaywright() {
  try {
    return await import('playwright-core');
  } catch (e) {
    throw new TestFailure(
        `cannot load playwright-core (${e.message}); run ./dev deps ` +
        '(npm ci in tests/browser)');
  }
}

async function getJob(base, id) {
  const resp = await fetch(`${base}/v1/jobs/${encodeURIComponent(id)}`);
  const body = await resp.text();
  check(resp.ok, `GET /v1/jobs/${id} answered HTTP ${resp.status}: ${body}`);
  return JSON.parse(body);
}

// State badge, text and job id of the current answer, read in one go in the page.
function snapshot(page) {
  return page.evaluate(() => {
    const answer = document.querySelector('[data-testid=answer]');
    const state = document.querySelector('[data-testid=state]');
    const error = document.querySelector('[data-testid=error]');
    return {
      text: answer ? answer.textContent : null,
      jobId: answer ? answer.dataset.jobId || '' : '',
      lastSeq: answer ? Number(answer.dataset.lastSeq || 0) : 0,
      state: state ? state.textContent : null,
      error: error && !error.hidden ? error.textContent : '',
    };
  });
}

async function waitForState(page, states, timeoutMs) {
  try {
    await page.waitForFunction((wanted) => {
      const s = document.querySelector('[data-testid=state]');
      return s !== null && wanted.includes(s.textContent);
    }, states, {timeout: timeoutMs, polling: 50});
  } catch (e) {
    const snap = await snapshot(page);
    throw new TestFailure(`state did not become ${states.join('|')} within ${timeoutMs} ms; ` +
                          `page shows ${JSON.stringify(snap)}`);
  }
  return snapshot(page);
}

// Waits until the current answer shows at least `words` words while the job is not
// finished; fails when it finished first (the stream was not observable).
async function waitForStreamedWords(page, words, timeoutMs) {
  let handle;
  try {
    handle = await page.waitForFunction((n) => {
      const a = document.querySelector('[data-testid=answer]');
      const s = document.querySelector('[data-testid=state]');
      if (!a || !s) return false;
      const count = a.textContent.split(' ').filter(Boolean).length;
      if (['SUCCEEDED', 'FAILED', 'CANCELLED'].includes(s.textContent)) {
        return {finished: true, state: s.textContent, count};
      }
      return count >= n ? {finished: false, state: s.textContent, count} : false;
    }, words, {timeout: timeoutMs, polling: 20});
  } catch (e) {
    throw new TestFailure(`no streamed text (${words} words) within ${timeoutMs} ms; ` +
                          `page shows ${JSON.stringify(await snapshot(page))}`);
  }
  const r = await handle.jsonValue();
  check(!r.finished, `the job reached ${r.state} before ${words} words were shown ` +
                     `(${r.count} shown): the answer did not stream token by token`);
  return r;
}

async function ask(page, question) {
  await page.getByTestId('prompt').fill(question);
  await page.getByTestId('send').click();
}

async function run(base, screenshotPath) {
  check(existsSync(CHROMIUM), `${CHROMIUM} not found; run ./dev deps (Debian package chromium)`);
  const {chromium} = await loadPlaywright();
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // playwright gives each launch a fresh, empty profile (--user-data-dir) of its own.
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const page = await browser.newPage({viewport: {width: 1000, height: 900}});
    const pageErrors = [];
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('console', (m) => {
      if (m.type() === 'error') log('page console error:', m.text());
    });
    const eventRequests = [];
    page.on('request', (r) => {
      if (r.url().includes('/events')) eventRequests.push(r.url());
    });

    const url = `${base}/?${new URLSearchParams(SIM)}`;
    const resp = await page.goto(url, {waitUntil: 'load'});
    check(resp && resp.ok(), `GET ${url} answered HTTP ${resp && resp.status()}`);
    check((await page.title()).includes('aijobs'), `unexpected page title "${await page.title()}"`);
    for (const id of ['prompt', 'send', 'reconnect', 'cancel']) {
      check(await page.getByTestId(id).count() === 1, `page has no [data-testid=${id}]`);
    }
    // The textbox has an accessible name (its <label>).
    check(await page.getByLabel('Your message').count() === 1, 'textbox has no label');

    // 1. Streaming.
    const question = 'Explain durable job queues in one paragraph.';
    await ask(page, question);
    const first = await waitForStreamedWords(page, 3, 30000);
    log(`streamed ${first.count} words while ${first.state}`);

    // 2. Reconnect mid-stream.
    const before = await snapshot(page);
    check(before.jobId !== '', 'the answer has no data-job-id after submit');
    check(before.lastSeq > 0, 'the page applied no event seq before reconnect');
    const resumed = page.waitForRequest(
        (r) => r.url().includes('/events') && /[?&]last_event_id=[1-9]/.test(r.url()),
        {timeout: 10000});
    await page.getByTestId('reconnect').click();
    let resumeUrl;
    try {
      resumeUrl = (await resumed).url();
    } catch (e) {
      throw new TestFailure(`clicking reconnect opened no resumed stream; stream requests: ` +
                            JSON.stringify(eventRequests));
    }
    const resumeSeq = Number(new URL(resumeUrl).searchParams.get('last_event_id'));
    check(resumeSeq >= before.lastSeq,
          `reconnect resumed after seq ${resumeSeq}, but ${before.lastSeq} was already applied`);
    const mid = await snapshot(page);
    check(!TERMINAL.includes(mid.state),
          `the job was already ${mid.state} when reconnect was clicked: stream too fast to ` +
          'test resume');
    log(`reconnected after seq ${resumeSeq} with ${mid.text.split(' ').length} words shown`);

    // 3. Final state and exact text.
    const done = await waitForState(page, TERMINAL, 60000);
    check(done.state === 'SUCCEEDED', `job ended ${done.state}: ${done.error}`);
    const job = await getJob(base, done.jobId);
    check(job.state === 'SUCCEEDED', `GET /v1/jobs says ${job.state}`);
    const resultText = job.result && job.result.text;
    check(typeof resultText === 'string' && resultText.length > 0,
          `job has no result.text: ${JSON.stringify(job.result)}`);
    check(done.text === resultText,
          `text shown differs from result.text\n  shown:  ${JSON.stringify(done.text)}\n` +
          `  result: ${JSON.stringify(resultText)}`);
    check(job.input.messages.length === 1, 'first job should carry only the question');
    log(`SUCCEEDED; ${resultText.split(' ').length} words shown, equal to result.text`);

    // 4. Follow-up carries the conversation history, and both turns stay visible.
    const followUp = 'And how does a retry avoid duplicate output?';
    await ask(page, followUp);
    const second = await waitForState(page, TERMINAL, 60000);
    check(second.state === 'SUCCEEDED', `follow-up ended ${second.state}: ${second.error}`);
    check(second.jobId !== done.jobId, 'follow-up reused the first job id');
    const job2 = await getJob(base, second.jobId);
    const msgs = job2.input.messages;
    check(Array.isArray(msgs) && msgs.length === 3,
          `follow-up input.messages should hold 3 messages, got ${JSON.stringify(msgs)}`);
    check(msgs[0].role === 'user' && msgs[0].content === question &&
              msgs[1].role === 'assistant' && msgs[1].content === resultText &&
              msgs[2].role === 'user' && msgs[2].content === followUp,
          `follow-up history is wrong: ${JSON.stringify(msgs)}`);
    check(second.text === job2.result.text, 'follow-up text differs from its result.text');
    const turns = await page.locator('#conversation > li').count();
    check(turns === 2, `expected 2 conversation turns on the page, found ${turns}`);

    // 5. Cancel a running job.
    await ask(page, 'Write a long essay that we will cancel.');
    await waitForStreamedWords(page, 2, 30000);
    await page.getByTestId('cancel').click();
    const cancelled = await waitForState(page, TERMINAL, 30000);
    check(cancelled.state === 'CANCELLED', `cancelled job ended ${cancelled.state}`);
    check(cancelled.error !== '', 'no error message shown for the cancelled job');
    check((await getJob(base, cancelled.jobId)).state === 'CANCELLED',
          'GET /v1/jobs does not report the job CANCELLED');
    check(await page.getByTestId('send').isEnabled(), 'send stays disabled after cancel');
    log(`cancel shown as "${cancelled.error}"`);

    check(pageErrors.length === 0, `uncaught errors in the page: ${pageErrors.join('; ')}`);

    // 6. Narrow screen: nothing overflows horizontally.
    await page.setViewportSize({width: 360, height: 740});
    const overflow = await page.evaluate(
        () => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    check(overflow <= 0, `page overflows a 360 px wide screen by ${overflow} px`);
    await page.setViewportSize({width: 1000, height: 900});

    await page.screenshot({path: screenshotPath, fullPage: true});
  } finally {
    await browser.close();
  }
  check(existsSync(screenshotPath), `no screenshot written to ${screenshotPath}`);
  const png = readFileSync(screenshotPath);
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  check(png.length > 1024 && png.subarray(0, 8).equals(signature),
        `${screenshotPath} is not a non-empty PNG (${statSync(screenshotPath).size} bytes)`);
  log(`screenshot ${screenshotPath} (${png.length} bytes)`);
}

async function main() {
  const [base, screenshotPath] = process.argv.slice(2);
  if (!base || !screenshotPath) {
    console.error(USAGE);
    process.exit(2);
  }
  const timer = setTimeout(() => {
    console.error(`FAIL: test did not finish within ${OVERALL_TIMEOUT_MS} ms`);
    process.exit(1);
  }, OVERALL_TIMEOUT_MS);
  try {
    await run(base.replace(/\/+$/, ''), screenshotPath);
  } catch (e) {
    console.error(`FAIL: ${e instanceof TestFailure ? e.message : e.stack || e}`);
    process.exit(1);
  }
  clearTimeout(timer);
  console.log('PASS: chat page streamed, resumed without duplicates, kept history, cancelled');
}

main();
