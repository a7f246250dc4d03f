import { existsSync } from 'node:fs'
import { chromium, type Browser, type Page } from 'playwright-core'
import type { TestContext } from '../helper.ts'

/**
 * The system Chromium (Debian's `chromium` package). Tests never download a browser; CHROMIUM_PATH
 * points them at another binary on machines without Debian's.
 */
export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'

/** Headless, sandbox-less (containers), and nothing that phones home or updates during a test. */
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run'
]

const INSTALL_HINT = `Chromium not found at ${CHROMIUM_PATH}: apt-get install -y chromium (or set CHROMIUM_PATH)`

/** The part of a tap `Test` used to skip or fail a file. */
interface FileContext {
  plan: (count: number, comment?: string) => void
  fail: (message: string) => void
  end: () => void
}

/**
 * True when the browser exists. Otherwise the file is skipped with one line saying how to install it,
 * or failed under CI, where a missing browser must never pass as a silent skip.
 */
export function requireChromium (t: FileContext): boolean {
  if (existsSync(CHROMIUM_PATH)) return true
  if (process.env.CI) {
    t.fail(`${INSTALL_HINT}. Browser tests cannot be skipped under CI.`)
    t.end()
  } else {
    t.plan(0, INSTALL_HINT)
  }
  return false
}

/** Launches Chromium, closed when the test ends. */
export async function launchChromium (t: TestContext): Promise<Browser> {
  const browser = await chromium.launch({ executablePath: CHROMIUM_PATH, args: CHROMIUM_ARGS })
  t.teardown(() => browser.close())
  return browser
}

/**
 * Collects what must never happen on the page: uncaught exceptions and Content-Security-Policy
 * violations (an inline script or style attribute that slipped in). Failed resource loads are left
 * out: an optional endpoint answering 404 is not a page fault.
 */
export function watchPageProblems (page: Page): string[] {
  const problems: string[] = []
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`))
  page.on('console', (message) => {
    if (message.type() === 'error' && /Content Security Policy/i.test(message.text())) problems.push(`CSP: ${message.text()}`)
  })
  return problems
}

/** Waits until an element's text matches, then returns it. */
export async function waitForText (page: Page, selector: string, pattern: RegExp, timeout?: number): Promise<string> {
  await page.waitForFunction(([sel, source, flags]) => {
    const text = document.querySelector(sel!)?.textContent ?? ''
    return new RegExp(source!, flags).test(text)
  }, [selector, pattern.source, pattern.flags] as const, timeout === undefined ? undefined : { timeout })
  return (await page.textContent(selector)) ?? ''
}

/** The event log's row of one event. */
export const logRow = (id: number): string => `#log .row[data-id="${id}"]`
