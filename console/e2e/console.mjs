// End-to-end test of the console in headless Debian chromium (playwright-core, no download),
// against a master (with a slave, a name server and a one-node failover controller) started by
// scripts/console-e2e.sh.
// Env: ADMIN=https://127.0.0.1:PORT, TOKEN (admin), READ_TOKEN, SHOTS (screenshot directory),
// CHROMIUM, CLI (the wasmq binary), SERVER (protocol address), CA, PLUGIN (a plugin's .wasm),
// SLAVE_PID (killed by the last step).
// Exits non-zero on the first failure or on any error the page reports.
import { openPage } from "./browser.mjs";
import { mkdirSync } from "node:fs";
import { execFileSync, spawn } from "node:child_process";

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

// The wasmq CLI against the master.
const cliArgs = ["--server", process.env.SERVER, "--admin", admin.replace("https://", ""), "--ca", process.env.CA, "--token", token];
const cli = (...args) => execFileSync(process.env.CLI, [...cliArgs, ...args], { encoding: "utf8" });
const cliInBackground = (...args) => spawn(process.env.CLI, [...cliArgs, ...args], { stdio: "ignore" });
const text = async (selector) => (await page.waitForSelector(selector)).textContent();

const { browser, page, errors } = await openPage();
const step = async (name, f) => {
  try {
    await f();
  } catch (e) {
    await page.screenshot({ path: `${shots}/${name}-FAILED.png`, fullPage: true });
    throw e;
  }
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
    await page.waitForSelector("#login .error >> text=wrong token");
  });
  await step("02-cluster", async () => {
    await page.fill("#token", token);
    await page.click("#login button[type=submit]");
    await page.waitForSelector("#broker-name >> text=broker-a (master 0, cluster e2e)");
    await page.waitForSelector("#disk >> text=/ used \\(\\d+ %\\)$/");
    // The broker set as the name server knows it: the master and its slave, with versions.
    await page.waitForSelector("#cluster-source >> text=as the name servers", { timeout: 10000 });
    await page.waitForFunction(() => document.querySelectorAll("#cluster tr.cluster-broker").length === 2, null, { timeout: 10000 });
    await page.waitForSelector("#cluster tr.cluster-broker td.role >> text=slave");
    await page.waitForSelector("#cluster tr.cluster-broker td.status >> text=up");
    // Replication: the slave is connected.
    await page.waitForSelector("#replicas tr.slave td.link >> text=connected", { timeout: 10000 });
    // The failover controller: its one node leads; the set's master 0 in epoch 1, both in sync.
    await page.waitForSelector("#controller-leader >> text=Leader: node 1");
    await page.waitForSelector("#controller-nodes tr.controller-node td.role:text-is('leader')");
    await page.waitForSelector("#controller-sets tr.controller-member:has(td.role:text-is('master')) td.epoch:text-is('1')");
    await page.waitForFunction(
      () => [...document.querySelectorAll("#controller-sets tr.controller-member td.in-sync")].map((td) => td.textContent).join() === "yes,yes",
      null, { timeout: 15000 });
  });
  await step("03-topics", async () => {
    await page.click("nav >> text=Topics");
    await page.fill("#topic-name", "e2e-orders");
    await page.fill("#topic-queues", "2");
    await page.fill("#topic-retention-hours", "24");
    await page.click("#create-topic button[type=submit]");
    await page.waitForSelector("tr.topic:has-text('e2e-orders') >> text=1d 0h");
    await page.waitForSelector("tr.topic:has-text('e2e-orders') td.message-type >> text=MIXED");
    // A topic of one message type: the API refuses sends of another kind.
    await page.fill("#topic-name", "e2e-fifo");
    await page.fill("#topic-retention-hours", "");
    await page.selectOption("#topic-message-type", "FIFO");
    await page.click("#create-topic button[type=submit]");
    await page.waitForSelector("tr.topic:has-text('e2e-fifo') td.message-type >> text=FIFO");
    const t = await api("GET", "/topics/e2e-fifo");
    if (t.message_type !== "FIFO") throw new Error(`e2e-fifo: ${JSON.stringify(t)}`);
    // Bad input is refused with the API's words.
    await page.fill("#topic-name", "bad name");
    await page.click("#create-topic button[type=submit]");
    await page.waitForSelector("#topics .error >> text=400");
  });
  let sentId;
  await step("04-topic-detail", async () => {
    await page.click("a.open-topic >> text=e2e-orders");
    await page.waitForSelector("#topic-queues");
    await page.waitForSelector("#topic-retention >> text=1d 0h");
    await page.fill("#send-body", '{"hello":"console"}');
    await page.fill("#send-key", "k-ui");
    await page.click("#send-message button[type=submit]");
    const sent = await text("#sent");
    sentId = sent.match(/^sent (\S+)/)[1];
    const queue = sent.match(/to queue (\d+)/)[1];
    await page.fill("#browse-queue", queue);
    // Browsing from a time finds it, and so does browsing from an offset.
    await page.fill("#browse-time", "2020-01-01T00:00:00");
    await page.click("#browse button[type=submit]");
    await page.waitForSelector("#browsed tr.message >> text=hello");
    await page.fill("#browse-time", "");
    await page.fill("#browse-offset", "0");
    await page.click("#browse button[type=submit]");
    await page.click("#browsed tr.message >> text=hello");
    // The body as JSON (pretty), then as hex.
    await page.waitForSelector('.message-view pre.body >> text=/"hello": "console"/');
    await page.click("#as-hex");
    await page.waitForSelector(".message-view pre.body >> text=7b 22 68 65");
  });
  await step("05-messages", async () => {
    await api("POST", "/topics/e2e-orders/messages", { body: "{\"order\":7}", key: "customer-7", properties: [["region", "eu"]] });
    await page.click("nav >> text=Messages");
    await page.fill("#find-topic", "e2e-orders");
    await page.fill("#find-key", "customer-7");
    await page.click("#find-by-key button[type=submit]");
    await page.click("tr.message >> text={\"order\":7}");
    await page.waitForSelector(".message-view table.properties >> text=region");
    await page.fill("#find-id", sentId);
    await page.click("#find-by-id button[type=submit]");
    await page.click("tr.message >> text=hello");
    await page.waitForSelector(`.message-view .message-id >> text=${sentId}`);
  });
  await step("06-groups-lag", async () => {
    // The group billing reads a message, then 200 more arrive: lag.
    cli("consume", "e2e-orders", "--group", "billing", "--count", "1");
    execFileSync(process.env.CLI, [...cliArgs, "send", "e2e-orders"], { input: Array.from({ length: 200 }, (_, i) => `m${i}`).join("\n") + "\n" });
    await page.click("nav >> text=Groups");
    await page.waitForSelector("article.group:has-text('billing') .total-lag >> text=/^[1-9][0-9]*$/", { timeout: 10000 });
    // A consumer runs: the lag falls to zero while the page watches, on every queue.
    const consumer = cliInBackground("consume", "e2e-orders", "--group", "billing");
    try {
      await page.waitForSelector("article.group:has-text('billing') .total-lag >> text=/^0$/", { timeout: 30000 });
      // The running member with the protocol it speaks and its queues.
      await page.waitForSelector("article.group:has-text('billing') tr.member td.protocol >> text=native");
      for (let i = 0; ; i++) {
        const g = await api("GET", "/groups/billing");
        const qs = g.queues.filter((q) => q.topic === "e2e-orders");
        if (qs.length === 2 && qs.every((q) => q.lag === 0)) break;
        if (i === 100) throw new Error(`the group's lag did not reach zero on every queue: ${JSON.stringify(g)}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    } finally {
      consumer.kill();
    }
    // Reset to the earliest offset: the lag shows again at the next refresh.
    await page.fill("article.group:has-text('billing') .reset-topic", "e2e-orders");
    await page.selectOption("article.group:has-text('billing') .reset-to", "earliest");
    await page.click("article.group:has-text('billing') .reset-offset button[type=submit]");
    await page.waitForSelector("article.group:has-text('billing') .done >> text=offsets reset");
    await page.waitForSelector("article.group:has-text('billing') .total-lag >> text=/^[1-9][0-9]*$/", { timeout: 10000 });
  });
  await step("07-dead-letters", async () => {
    await api("POST", "/topics", { name: "e2e-jobs", queues: 1 });
    await api("POST", "/topics/e2e-jobs/messages", { body: "poison" });
    // A member that answers every message "reconsume later": it comes back once, then is dead.
    const consumer = cliInBackground("consume", "e2e-jobs", "--group", "workers", "--reconsume-later", "--max-reconsume-times", "1");
    try {
      await page.waitForSelector("article.group:has-text('workers') tr.dead-letter >> text=poison", { timeout: 30000 });
    } finally {
      consumer.kill();
    }
    await page.click("article.group:has-text('workers') tr.dead-letter button");
    await page.waitForSelector("article.group:has-text('workers') .done >> text=resent");
    const t = await api("GET", "/topics/e2e-jobs");
    if (t.queues[0].max_offset !== 2) throw new Error(`the resent dead letter is not back on e2e-jobs: ${JSON.stringify(t)}`);
  });
  await step("08-plugins", async () => {
    await page.click("nav >> text=Plugins");
    await page.waitForSelector("#plugins >> text=No plugin uploaded.");
    await page.setInputFiles("#plugin-file", process.env.PLUGIN);
    await page.click("#upload-plugin button[type=submit]");
    const uploaded = await text("#plugin-outcome >> text=version 1 uploaded");
    const name = uploaded.split(" ")[0];
    await page.waitForSelector(`#plugin-list tr.plugin >> text=${name}`);
    await page.fill("#attach-plugin-name", name);
    await page.fill("#attach-version", "1");
    await page.selectOption("#attach-role", "router");
    await page.fill("#attach-topic", "e2e-orders");
    await page.fill("#attach-config", "tenants=acme=1-1");
    await page.click("#attach-plugin button[type=submit]");
    await page.waitForSelector("#plugin-outcome >> text=attached as router on e2e-orders");
    // The router places a tenant's message, and its statistics count it.
    const sent = await api("POST", "/topics/e2e-orders/messages", { body: "routed", properties: [["tenant", "acme"]] });
    if (sent.queue_id !== 1) throw new Error(`the router did not place the message: ${JSON.stringify(sent)}`);
    await page.waitForSelector("#attachments tr.attachment:has-text('e2e-orders') td:nth-child(6) >> text=/^[1-9]/", { timeout: 10000 });
  });
  await step("09-topic-plugins", async () => {
    await page.click("nav >> text=Topics");
    await page.click("a.open-topic >> text=e2e-orders");
    await page.waitForSelector("#topic-plugins >> text=as router");
    await page.click("nav >> text=Plugins");
    await page.click("#attachments tr.attachment button.detach");
    await page.waitForSelector("#plugins >> text=Nothing attached.");
  });
  await step("10-held", async () => {
    cli("send", "e2e-orders", "later", "--delay-ms", "600000");
    await page.click("nav >> text=Held");
    await page.waitForSelector("#scheduled >> text=1 waiting");
    await page.waitForSelector("#transactions >> text=0 undecided");
  });
  await step("11-dark", async () => {
    await page.click("#dark");
    await page.waitForFunction(() => document.documentElement.classList.contains("dark"));
    await page.click("nav >> text=Overview");
    await page.waitForSelector("#cluster tr.cluster-broker");
  });
  await step("12-read-only", async () => {
    await page.click("#logout");
    await page.fill("#token", readToken);
    await page.click("#login button[type=submit]");
    await page.waitForSelector("#broker-name");
    await page.click("nav >> text=Topics");
    await page.fill("#topic-name", "not-allowed");
    await page.click("#create-topic button[type=submit]");
    await page.waitForSelector("#topics .error >> text=read-only");
  });
  await step("13-slave-down", async () => {
    // The slave killed: the name server sees its connection close, and the overview shows it
    // down (since when) while the master stays up, and its replication link down.
    process.kill(Number(process.env.SLAVE_PID), "SIGKILL");
    await page.click("nav >> text=Overview");
    await page.waitForSelector("#cluster tr.cluster-broker:has(td.role:text-is('slave')) td.status >> text=/^down since /", { timeout: 10000 });
    await page.waitForSelector("#cluster tr.cluster-broker:has(td.role:text-is('master')) td.status:text-is('up')");
    // The master's replication link to it is down too, and the controller drops it from the
    // in-sync set (it could no longer be elected without losing acknowledged messages).
    await page.waitForSelector("#replicas tr.slave td.link >> text=down", { timeout: 10000 });
    await page.waitForSelector("#controller-sets tr.controller-member:has(td.role:text-is('slave')) td.in-sync:text-is('no')", { timeout: 15000 });
  });
  console.log("console e2e: all steps passed");
} finally {
  await browser.close();
}
