// Drives the dashboard of a running daemon in headless Chromium:
// load the page, submit a task with the form, watch it progress and finish
// live, watch a breaker open; save a screenshot. Run by the end-to-end test
// `dashboard::the_dashboard_shows_work_live_in_a_browser`, which starts the
// daemon and passes:
//   WASMHIVE_URL     the daemon's base URL
//   WASMHIVE_TOKEN   the API token (auth is on in the test)
//   SCREENSHOT       where to save the screenshot
//   CHROMIUM         the browser binary (default /usr/bin/chromium)
import { chromium } from "playwright-core";

const url = process.env.WASMHIVE_URL;
const token = process.env.WASMHIVE_TOKEN || "";
const screenshot = process.env.SCREENSHOT || "dashboard.png";
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";

function step(message) {
  console.log(`[browser] ${message}`);
}

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
let failed = false;
const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
page.on("console", (msg) => step(`console ${msg.type()}: ${msg.text()}`));
try {
  await page.goto(url, { waitUntil: "domcontentloaded" });
  step("page loaded");

  // Auth is on: the page asks for the token.
  await page.waitForSelector("#token-box.show", { timeout: 10000 });
  await page.fill("#token", token);
  await page.click("#token-save");
  await page.waitForFunction(() => document.getElementById("conn").textContent === "live", null, { timeout: 15000 });
  step("live over server-sent events");

  // Pools and plugins come from the first stats event.
  await page.waitForSelector('#pools tr[data-pool="batch"]', { timeout: 10000 });
  await page.waitForFunction(() => [...document.querySelectorAll("#kind option")].some((o) => o.value === "progress"), null, { timeout: 10000 });

  // Submit a task that reports progress in steps.
  await page.selectOption("#kind", "progress");
  await page.fill("#payload", JSON.stringify({ steps: 5, step_ms: 400 }));
  await page.click("#submit-button");
  await page.waitForFunction(() => document.getElementById("submit-result").textContent.startsWith("submitted "), null, { timeout: 10000 });
  const id = (await page.textContent("#submit-result")).replace("submitted ", "").trim();
  step(`submitted ${id}`);
  const row = `#tasks tr[data-task="${id}"]`;

  // It runs with a progress bar somewhere between 0 and 100...
  await page.waitForFunction((sel) => {
    const tr = document.querySelector(sel);
    if (!tr || tr.dataset.status !== "running") return false;
    const pct = parseInt(tr.querySelector(".progress-text").textContent, 10);
    return pct > 0 && pct < 100;
  }, row, { timeout: 15000 });
  step(`running, progress: ${await page.textContent(`${row} .progress-text`)}`);
  // ...and finishes, live.
  await page.waitForSelector(`${row}[data-status="succeeded"]`, { timeout: 15000 });
  step("succeeded");

  // A plugin that always traps: its breaker opens after five failures.
  for (let i = 0; i < 6; i++) {
    await page.evaluate(async ([tok]) => {
      await fetch("/api/v1/tasks", {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: "Bearer " + tok },
        body: JSON.stringify({ kind: "panic", payload: {}, max_retries: 0 }),
      });
    }, [token]);
  }
  await page.waitForSelector('#breakers tr[data-breaker="plugin:panic@1.0.0"] td.state-open', { timeout: 20000 });
  step("breaker plugin:panic@1.0.0 is open");
  await page.waitForSelector('#tasks tr[data-status="failed"] .err', { timeout: 10000 });
  step("failure details shown");
} catch (err) {
  failed = true;
  console.error(`[browser] FAILED: ${err.message}`);
} finally {
  await page.screenshot({ path: screenshot, fullPage: true });
  step(`screenshot saved to ${screenshot}`);
  await browser.close();
}
process.exit(failed ? 1 : 0);
