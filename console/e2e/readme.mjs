// The README's run command serves the console: started by scripts/console-e2e.sh in a clean
// clone, exactly as the README says. Loads the console in headless Debian chromium
// (playwright-core), logs in with the token the broker printed and opens the topics page.
// Env: ADMIN=https://127.0.0.1:7071, TOKEN, SHOTS, CHROMIUM. Exits non-zero on any failure or
// page error.
import { openPage } from "./browser.mjs";
import { mkdirSync } from "node:fs";

const admin = process.env.ADMIN, token = process.env.TOKEN;
const shots = process.env.SHOTS || "console-shots";
mkdirSync(shots, { recursive: true });

const { browser, page, errors } = await openPage();
try {
  await page.goto(`${admin}/`);
  await page.waitForSelector("#login");
  await page.fill("#token", token);
  await page.click("#login button[type=submit]");
  // The overview of this broker: its name and role, and its disk.
  await page.waitForSelector("#broker-name >> text=/\\(master 0, cluster /");
  await page.waitForSelector("#disk >> text=/ used \\(\\d+ %\\)$/");
  await page.click("nav >> text=Topics");
  await page.waitForSelector("#create-topic");
  await page.screenshot({ path: `${shots}/00-readme-run.png`, fullPage: true });
  if (errors.length) throw new Error(`page errors: ${errors.join("; ")}`);
  console.log(`ok 00-readme-run (${shots}/00-readme-run.png)`);
} catch (e) {
  await page.screenshot({ path: `${shots}/00-readme-run-FAILED.png`, fullPage: true });
  throw e;
} finally {
  await browser.close();
}
