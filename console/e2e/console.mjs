// End-to-end test of the console in headless Debian chromium (playwright-core, no download).
// Env: ADMIN=https://127.0.0.1:PORT, TOKEN (admin), READ_TOKEN, SHOTS (screenshot directory),
// CHROMIUM (default /usr/lib/chromium/chromium), and for consuming as a group: CLI (the wasmq
// binary), SERVER (protocol address), CA. Exits non-zero on the first failure or on any
// error the page reports.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { execFileSync } from "node:child_process";

const admin = process.env.ADMIN, token = process.env.TOKEN, readToken = process.env.READ_TOKEN;
const shots = process.env.SHOTS || "console-shots";
mkdirSync(shots, { recursive: true });
process.env.NODE_TLS_REJECT_UNAUTHORIZED = "0"; // the broker's development CA, on loopback

async function api(method, path, body, t = token) {
  const r = await fetch(`${admin}/api/v1${path}`, {
    method, headers: { authorization: `Bearer ${t}`, "content-type": "application/json" },
    body: body && JSON.stringify(body),
  });
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${await r.text()}`);
  return r.status === 204 ? null : r.json();
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/lib/chromium/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
const page = await browser.newPage({ ignoreHTTPSErrors: true, viewport: { width: 1200, height: 800 } });
const errors = [];
page.on("pageerror", (e) => errors.push(e.message));
// HTTP errors the test provokes (401, 403) and the missing favicon are not page errors.
page.on("console", (m) => { if (m.type() === "error" && !/Failed to load resource/.test(m.text())) errors.push(m.text()); });
const step = async (name, f) => {
  await f();
  await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
  if (errors.length) throw new Error(`page errors during ${name}: ${errors.join("; ")}`);
  console.log(`ok ${name} (${shots}/${name}.png)`);
};

try {
  await step("01-login", async () => {
    await page.goto(`${admin}/`);
    await page.waitForSelector("#login");
    await page.fill("#token", "wrong-token-000000000");
    await page.click("#login button[type=submit]");
    await page.waitForSelector("#login .error");
  });
  await step("02-overview", async () => {
    await page.fill("#token", token);
    await page.click("#login button[type=submit]");
    await page.waitForSelector("#broker-name");
    await page.waitForSelector("#replicas");
  });
  await step("03-topics", async () => {
    await page.click("nav >> text=Topics");
    await page.fill("#topic-name", "e2e-orders");
    await page.fill("#topic-queues", "2");
    await page.click("#create-topic button[type=submit]");
    await page.waitForSelector("tr.topic >> text=e2e-orders");
  });
  await step("03b-topic-detail", async () => {
    await page.click("a.open-topic >> text=e2e-orders");
    await page.waitForSelector("#topic-queues");
    await page.fill("#send-body", "hello from the console");
    await page.fill("#send-key", "k-ui");
    await page.click("#send-message button[type=submit]");
    const sent = await (await page.waitForSelector("#sent")).textContent();
    const queue = sent.match(/to queue (\d+)/)[1];
    await page.fill("#browse-queue", queue);
    await page.fill("#browse-offset", "0");
    await page.click("#browse button[type=submit]");
    await page.waitForSelector("tr.browsed >> text=hello from the console");
  });
  await step("04-messages", async () => {
    await api("POST", "/topics/e2e-orders/messages", { body: "{\"order\":7}", key: "customer-7" });
    await page.click("nav >> text=Messages");
    await page.fill("#find-topic", "e2e-orders");
    await page.fill("#find-key", "customer-7");
    await page.click("#find-by-key button[type=submit]");
    await page.waitForSelector("tr.message >> text={\"order\":7}");
  });
  await step("05-groups", async () => {
    // A group consumes one message with the CLI, so it has offsets and lag to show.
    execFileSync(process.env.CLI, ["--server", process.env.SERVER, "--admin", admin.replace("https://", ""), "--ca", process.env.CA,
      "--token", token, "consume", "e2e-orders", "--group", "billing", "--count", "1"]);
    await page.click("nav >> text=Groups");
    await page.waitForSelector("article.group >> text=billing");
    await page.fill("article.group .reset-topic", "e2e-orders");
    await page.fill("article.group .reset-to", "earliest");
    await page.click("article.group .reset-offset button[type=submit]");
    await page.waitForSelector(".done >> text=offsets reset");
    // Back at the earliest offset: the group's lag shows again at the next refresh.
    await page.waitForSelector("article.group td.lag >> text=1", { timeout: 10000 });
  });
  await step("05b-plugins", async () => {
    await page.click("nav >> text=Plugins");
    await page.waitForSelector("#plugins >> text=No plugin uploaded.");
  });
  await step("06-dark", async () => {
    await page.click("#dark");
    await page.waitForFunction(() => document.documentElement.classList.contains("dark"));
    await page.click("nav >> text=Overview");
    await page.waitForSelector("#broker-name");
  });
  await step("07-read-only", async () => {
    await page.click("#logout");
    await page.fill("#token", readToken);
    await page.click("#login button[type=submit]");
    await page.waitForSelector("#broker-name");
    await page.click("nav >> text=Topics");
    await page.fill("#topic-name", "not-allowed");
    await page.click("#create-topic button[type=submit]");
    await page.waitForSelector("#topics .error >> text=read-only");
  });
  console.log("console e2e: all steps passed");
} finally {
  await browser.close();
}
