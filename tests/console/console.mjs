// Drives the operator console in a real headless Chromium (Debian's, through playwright-core;
// no browser is downloaded). The Rust test (tests/e2e/console.rs) starts the server, prepares
// a dead job and a second session, and runs this with its facts in the environment:
//
//   LEXIFLOW_URL, ADMIN_EMAIL, ADMIN_PASSWORD, QUEUE (to pause), DEAD_JOB (id to retry),
//   REVOKE_SESSION (session id to revoke), ARTIFACTS (directory for the screenshot),
//   CHROMIUM (the executable)
//
// It prints one JSON line with what it saw and exits 0, or prints the failure and exits 1.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const base = env("LEXIFLOW_URL");
const queue = env("QUEUE");
const deadJob = env("DEAD_JOB");
const revoke = env("REVOKE_SESSION");
const artifacts = env("ARTIFACTS");
mkdirSync(artifacts, { recursive: true });

const tid = (id) => `[data-testid="${id}"]`;
const consoleErrors = [];
const seen = {};

const browser = await chromium.launch({
  executablePath: env("CHROMIUM"),
  headless: true,
  // Root in CI containers cannot use Chromium's sandbox.
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
let page;
try {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1800 } });
  page = await context.newPage();
  // CSP violations reach the page as events; record them before any page script runs.
  await page.addInitScript(() => {
    window.__csp = [];
    document.addEventListener("securitypolicyviolation", (e) => {
      window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`);
    });
  });
  page.on("console", (m) => {
    if (m.type() === "error") consoleErrors.push(m.text());
  });
  page.on("pageerror", (e) => consoleErrors.push(`pageerror: ${e.message}`));

  await page.goto(`${base}/console`, { waitUntil: "load" });
  await page.locator(tid("login-email")).waitFor();
  await page.fill(tid("login-email"), env("ADMIN_EMAIL"));
  await page.fill(tid("login-password"), env("ADMIN_PASSWORD"));
  await page.click(tid("login-submit"));
  await page.locator(tid("user-name")).waitFor({ state: "visible" });
  seen.signedInAs = (await page.textContent(tid("user-name"))).trim();

  // Pause a queue: its state reads "paused".
  await page.locator(tid(`queue-pause-${queue}`)).click();
  await page.waitForFunction(
    (sel) => document.querySelector(sel)?.textContent.trim() === "paused",
    tid(`queue-state-${queue}`),
  );
  seen.paused = queue;

  // Retry the dead job (its queue is paused, so it waits): the dead count falls.
  await page.locator(tid(`dead-retry-${deadJob}`)).waitFor();
  const deadBefore = Number(await page.textContent(tid("dead-count")));
  await page.locator(tid(`dead-retry-${deadJob}`)).click();
  await page.waitForFunction(
    ([sel, before]) => Number(document.querySelector(sel)?.textContent) < before,
    [tid("dead-count"), deadBefore],
  );
  seen.dead = { before: deadBefore, after: Number(await page.textContent(tid("dead-count"))) };

  // Resume it again.
  await page.locator(tid(`queue-resume-${queue}`)).click();
  await page.waitForFunction(
    (sel) => document.querySelector(sel)?.textContent.trim() === "running",
    tid(`queue-state-${queue}`),
  );

  // Verify the audit chain.
  await page.click(tid("audit-verify"));
  await page.waitForFunction((sel) => /^valid/.test(document.querySelector(sel)?.textContent ?? ""), tid("audit-result"));
  seen.audit = (await page.textContent(tid("audit-result"))).trim();

  // Revoke the other session: its row goes.
  await page.locator(tid(`session-revoke-${revoke}`)).click();
  await page.locator(tid(`session-row-${revoke}`)).waitFor({ state: "detached" });
  seen.revoked = revoke;

  // The live plots are drawn.
  await page.locator(tid("live-rate")).waitFor();
  await page.locator(tid("live-p99")).waitFor();

  await page.screenshot({ path: `${artifacts}/console.png`, fullPage: true });
  seen.csp = await page.evaluate(() => window.__csp);
  seen.consoleErrors = consoleErrors;
  console.log(JSON.stringify({ ok: true, ...seen }));
} catch (e) {
  if (page) await page.screenshot({ path: `${artifacts}/console-failure.png`, fullPage: true }).catch(() => {});
  console.log(JSON.stringify({ ok: false, error: String(e?.stack ?? e), consoleErrors, ...seen }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
