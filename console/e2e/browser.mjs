// Headless Debian chromium through playwright-core (no browser download), shared by the
// console's browser tests: a page that trusts the broker's development certificate, and the
// errors it reports (uncaught exceptions and console errors; HTTP errors a test provokes, such
// as 401 and 403, and the missing favicon are not page errors).
import { chromium } from "playwright-core";

export async function openPage() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync"],
  });
  const page = await browser.newPage({ ignoreHTTPSErrors: true, viewport: { width: 1200, height: 800 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => { if (m.type() === "error" && !/Failed to load resource/.test(m.text())) errors.push(m.text()); });
  return { browser, page, errors };
}
