import t from 'tap'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Page } from 'playwright-core'
import { listen, tempDir, type ListenResult } from '../helper.ts'
import { launchChromium, requireChromium, watchPageProblems } from './browser.ts'

/**
 * Batch history in real Chromium against the real service: a history posted through
 * POST /api/events (with the producers' timestamps), then everything checked as the page shows it.
 * Set UPDATE_DOCS_SCREENSHOTS=1 to also write docs/history-timeline.png.
 */

const artifacts = fileURLToPath(new URL('../../test-artifacts/', import.meta.url))
const docsScreenshot = fileURLToPath(new URL('../../docs/history-timeline.png', import.meta.url))

type Input = { type: string, payload: Record<string, unknown>, timestamp: number }

const COMMANDS = ['create-story', 'dev-story', 'code-review']

/**
 * One finished batch: `stories` stories, each running the three usual commands one after the
 * other, the n-th story's review failing when `failStory` says so; costs grow with the story.
 */
function finishedBatch (batchId: number, start: number, stories: string[], options: { status?: string, failStory?: number, progress?: number } = {}): Input[] {
  let clock = start
  const at = (step: number): number => (clock += step)
  const events: Input[] = [{ type: 'batch:start', payload: { batch_id: batchId, max_cycles: 2, batch_mode: 'fixed' }, timestamp: at(0) }]
  events.push({ type: 'cycle:start', payload: { cycle_number: 1, story_keys: stories }, timestamp: at(1000) })
  stories.forEach((story, index) => {
    COMMANDS.forEach((command, step) => {
      const ids = { story_key: story, command, task_id: command }
      events.push({ type: 'command:start', payload: { ...ids, message: '' }, timestamp: at(2000) })
      for (let p = 0; p < (options.progress ?? 0) / stories.length / COMMANDS.length; p++) {
        events.push({ type: 'command:progress', payload: { ...ids, message: `Edit src/file-${p}.ts` }, timestamp: at(100) })
      }
      const failed = options.failStory === index && step === 2
      events.push({
        type: 'command:end',
        payload: { ...ids, status: failed ? 'failed' : 'success', message: '', metrics: { input_tokens: 100, cache_read_input_tokens: 20_000 * (index + 1), output_tokens: 1000 + step * 500, total_cost_usd: Number((0.05 * (index + 1) + 0.01 * step).toFixed(2)) } },
        timestamp: at(40_000 + index * 7_000 + step * 20_000)
      })
    })
    if (options.failStory !== index) events.push({ type: 'story:status', payload: { story_key: story, old_status: 'review', new_status: 'done' }, timestamp: at(500) })
  })
  events.push({ type: 'batch:end', payload: { batch_id: batchId, cycles_completed: 1, status: options.status ?? 'completed' }, timestamp: at(5000) })
  return events
}

async function post (url: string, events: Input[]): Promise<void> {
  for (let i = 0; i < events.length; i += 1000) {
    const response = await fetch(`${url}/api/events`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(events.slice(i, i + 1000)) })
    if (response.status !== 201) throw new Error(`POST /api/events: ${response.status} ${await response.text()}`)
  }
}

const texts = async (page: Page, selector: string): Promise<string[]> =>
  await page.$$eval(selector, nodes => nodes.map(node => (node.textContent ?? '').trim()))
const attrs = async (page: Page, selector: string, name: string): Promise<string[]> =>
  await page.$$eval(selector, (nodes, attr) => nodes.map(node => node.getAttribute(attr) ?? ''), name)

if (requireChromium(t)) {
  t.test('batch history in Chromium', async t => {
    const suite = t
    const dbPath = path.join(await tempDir(suite), 'history.db')
    const server: ListenResult = await listen(suite, { dbPath, artifactsDir: await tempDir(suite) })
    const day = Date.now() - 2 * 86_400_000
    const stories1 = ['1-1-account-signup', '1-2-invoice-export', '1-3-payment-retries', '2a-1-usage-metering', '2a-2-rate-plans', '2a-3-proration-rules']
    await post(server.url, [
      ...finishedBatch(1, day, stories1, { failStory: 1 }),
      ...finishedBatch(2, day + 3_600_000, ['3-1-tax-rules'], { status: 'stopped' }),
      // Batch 3 has a long log: two pages of the past-batch view's log.
      ...finishedBatch(3, day + 7_200_000, ['3-2-vat-ids', '3-3-eu-invoices'], { status: 'all_done', progress: 600 })
    ])

    const browser = await launchChromium(suite)
    const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, colorScheme: 'dark', acceptDownloads: true })
    const page = await context.newPage()
    page.setDefaultTimeout(10_000)
    const problems = watchPageProblems(page)
    await page.goto(`${server.url}/`)
    await page.locator('#connection[data-state="connected"]').waitFor()

    await t.test('the sidebar lists the batches newest first with their outcome and cost', async t => {
      await page.locator('#history .history-item[data-batch="1"]').waitFor()
      t.same(await attrs(page, '#history .history-item', 'data-batch'), ['3', '2', '1'])
      t.same(await texts(page, '#history .history-item .badge'), ['all done', 'stopped', 'completed'])
      // Batch 1: six stories, three runs each, costs 0.05·n + 0.01·step.
      const cost1 = stories1.reduce((sum, _story, index) => sum + [0, 1, 2].reduce((s, step) => s + Number((0.05 * (index + 1) + 0.01 * step).toFixed(2)), 0), 0)
      t.equal(await page.textContent('#history .history-item[data-batch="1"] .history-cost'), `$${cost1.toFixed(2)}`)
      t.match(await page.textContent('#history .history-item[data-batch="1"] .history-item-meta'), /1\/2 cycles · 6 stories/)
    })

    await t.test('selecting a batch shows its stats, story table and timeline; the URL follows', async t => {
      await page.click('#history .history-item[data-batch="1"] button')
      await page.locator('#batch-view[data-state="ready"][data-batch="1"]').waitFor()
      t.equal(new URL(page.url()).hash, '#batch=1')
      t.equal(await page.getAttribute('body', 'data-view'), 'batch')
      t.notOk(await page.locator('#live-timeline').isVisible(), 'the live panels give way')
      t.equal(await page.getAttribute('#history .history-item[data-batch="1"]', 'aria-current'), 'page')
      t.equal(await page.textContent('#batch-view .batch-view-title'), 'Batch #1')
      const stat = async (key: string): Promise<string | null> => await page.textContent(`#batch-view .stat-card[data-stat="${key}"] dd`)
      t.equal(await stat('done'), '5')
      t.equal(await stat('failed'), '1')
      t.equal(await stat('in-progress'), '0')
      t.equal(await stat('commands'), '18')
      t.match(await stat('cost'), /^\$\d+\.\d\d$/)
      t.same(await attrs(page, '#batch-view .story-table tbody tr', 'data-story'), stories1, 'in start order at first')
      t.match(await page.textContent('#batch-view .story-table tr[data-story="1-2-invoice-export"]'), /failed/)

      t.equal(await page.locator('#batch-view .timeline .bar').count(), 18, 'a bar per command run')
      t.equal(await page.locator('#batch-view .timeline .lane-label').count(), 6, 'a lane per story')
      t.equal(await page.locator('#batch-view .timeline .bar.failed').count(), 1, 'the failed run is marked')
      t.same(await texts(page, '#batch-view .timeline .legend-item'), ['code-review', 'create-story', 'dev-story'])
      const colours = await page.$$eval('#batch-view .timeline .bar', bars => new Set(bars.map(bar => getComputedStyle(bar).fill)).size)
      t.equal(colours, 3, 'coloured by command')

      await page.hover('#batch-view .bar.failed')
      const tooltip = page.locator('#batch-view .timeline-tooltip')
      await tooltip.waitFor()
      const tip = await tooltip.innerText()
      t.match(tip, /code-review/, 'command')
      t.match(tip, /1-2-invoice-export/, 'story')
      t.match(tip, /Status\s+failed/)
      t.match(tip, /Duration\s+1m 27s/, 'duration')
      t.match(tip, /Tokens\s+40\.1k in · 2\.0k out/, 'tokens')
      t.match(tip, /Cost\s+\$0\.12/, 'cost')
    })

    await t.test('the story table sorts by cost and by duration', async t => {
      await page.click('#batch-view .sort[data-sort="cost"]')
      t.equal(await page.getAttribute('#batch-view th:has(.sort[data-sort="cost"])', 'aria-sort'), 'descending')
      t.same(await attrs(page, '#batch-view .story-table tbody tr', 'data-story'), [...stories1].reverse(), 'costliest first')
      await page.click('#batch-view .sort[data-sort="cost"]')
      t.equal(await page.getAttribute('#batch-view th:has(.sort[data-sort="cost"])', 'aria-sort'), 'ascending')
      t.same(await attrs(page, '#batch-view .story-table tbody tr', 'data-story'), stories1)
      await page.click('#batch-view .sort[data-sort="duration"]')
      t.equal(await page.locator('#batch-view th[aria-sort]').count(), 1, 'one sorted column')
    })

    await t.test('CSV download', async t => {
      const [download] = await Promise.all([page.waitForEvent('download'), page.click('#batch-view .csv-link')])
      t.equal(download.suggestedFilename(), 'batch-1-commands.csv')
      const csv = await readFile((await download.path())!, 'utf8')
      const lines = csv.split('\r\n')
      t.equal(lines[0], 'batch,story,epic,command,task_id,status,started_at,ended_at,duration_s,tokens_in,tokens_out,cost_usd')
      t.equal(lines.length, 1 + 18 + 1, 'a header, a row per run, and the final CRLF')
      t.match(lines[1], /^1,1-1-account-signup,1,create-story,create-story,success,\d{4}-\d\d-\d\dT[\d:.]+Z,\d{4}-\d\d-\d\dT[\d:.]+Z,40,20100,1000,0\.05$/)
      t.ok(lines.some(line => /^1,1-2-invoice-export,1,code-review,code-review,failed,/.test(line)))
    })

    await t.test('Back to live, and the browser\'s back button returns to the batch', async t => {
      await page.click('#batch-view .back-to-live')
      await page.locator('#batch-view').waitFor({ state: 'hidden' })
      t.equal(new URL(page.url()).hash, '')
      t.equal(await page.getAttribute('body', 'data-view'), 'live')
      t.ok(await page.locator('#live-timeline').isVisible())
      await page.goBack()
      await page.locator('#batch-view[data-state="ready"][data-batch="1"]').waitFor()
      t.pass('back shows batch 1 again')
      await page.goto(`${server.url}/#batch=2`)
      await page.locator('#batch-view[data-state="ready"][data-batch="2"]').waitFor()
      t.equal(await page.textContent('#batch-view .batch-view-title'), 'Batch #2', 'a shared link opens its batch')
      await page.click('#batch-view .back-to-live')
      await page.locator('#batch-view').waitFor({ state: 'hidden' })
    })

    await t.test('a live batch: the sidebar adds it and its timeline grows as events arrive', async t => {
      const emit = async (type: string, payload: Record<string, unknown>, timestamp?: number): Promise<void> => {
        await post(server.url, [{ type, payload, ...(timestamp === undefined ? {} : { timestamp }) } as Input])
      }
      const now = Date.now()
      await emit('batch:start', { batch_id: 10, max_cycles: 1, batch_mode: 'fixed' }, now - 60_000)
      // One event stamped by the server, so the page's estimate of the server clock is not taken from the back-dated ones.
      await emit('command:progress', { story_key: '4-1-live', command: 'create-story', task_id: 'create-story', message: 'clock' })
      await page.locator('#history .history-item[data-batch="10"] .badge', { hasText: 'running' }).waitFor()
      t.equal((await attrs(page, '#history .history-item', 'data-batch'))[0], '10', 'added live, on top')
      t.equal(await page.textContent('#live-timeline .live-timeline-batch'), '#10')

      // A run that finished 30 s long, and one that has been running for 10 s.
      await emit('command:start', { story_key: '4-1-live', command: 'create-story', task_id: 'create-story' }, now - 60_000)
      await emit('command:end', { story_key: '4-1-live', command: 'create-story', task_id: 'create-story', status: 'success' }, now - 30_000)
      await emit('command:start', { story_key: '4-1-live', command: 'dev-story', task_id: 'dev-story' }, now - 10_000)
      const running = page.locator('#live-timeline .bar.running[data-command="dev-story"][data-story="4-1-live"]')
      await running.waitFor()
      const ratio = async (): Promise<number> => await page.evaluate(() => {
        const width = (selector: string): number => Number(document.querySelector(selector)?.getAttribute('width'))
        return width('#live-timeline .bar[data-command="dev-story"]') / width('#live-timeline .bar[data-command="create-story"]')
      })
      const before = await ratio()
      await page.waitForFunction(start => {
        const width = (selector: string): number => Number(document.querySelector(selector)?.getAttribute('width'))
        return width('#live-timeline .bar[data-command="dev-story"]') / width('#live-timeline .bar[data-command="create-story"]') > start * 1.05
      }, before, { timeout: 8000 })
      t.pass(`the running bar grows against the finished one (from ${before.toFixed(2)} of its width)`)
      t.ok(await page.locator('#live-timeline .now-line:not([hidden])').count(), 'a now line')

      await emit('command:start', { story_key: '4-2-second', command: 'dev-story', task_id: 'dev-story' })
      await page.locator('#live-timeline .lane-label[data-story="4-2-second"]').waitFor()
      t.pass('a new story gets a lane as its first command starts')
      await emit('command:end', { story_key: '4-1-live', command: 'dev-story', task_id: 'dev-story', status: 'error' })
      await page.locator('#live-timeline .bar.failed[data-command="dev-story"][data-story="4-1-live"]').waitFor()
      t.notOk(await running.count(), 'the ended run stops growing and is marked failed')
      await emit('batch:end', { batch_id: 10, cycles_completed: 1, status: 'completed' })
      await page.locator('#history .history-item[data-batch="10"] .badge', { hasText: 'completed' }).waitFor()
      t.pass('the sidebar follows the end')
    })

    await t.test('reload restores the view, the batch, the sort, the log\'s scroll and the folded sidebar', async t => {
      await page.click('#history .history-item[data-batch="3"] button')
      await page.locator('#batch-view[data-state="ready"][data-batch="3"]').waitFor()
      await page.click('#batch-view .sort[data-sort="duration"]')
      const sortedBefore = await attrs(page, '#batch-view .story-table tbody tr', 'data-story')
      const sortBefore = await page.getAttribute('#batch-view th:has(.sort[data-sort="duration"])', 'aria-sort')
      // The second page of the log, then a place in it.
      await page.click('#batch-view .history-log-panel .history-more')
      await page.waitForFunction(() => Number(document.querySelector<HTMLElement>('#batch-view .history-log')?.dataset.loaded) > 500)
      const loaded = Number(await page.getAttribute('#batch-view .history-log', 'data-loaded'))
      const { top, firstVisible } = await page.$eval('#batch-view .history-log', list => {
        list.scrollTop = Math.round(list.scrollHeight * 0.8)
        const rows = [...list.children] as HTMLElement[]
        const index = rows.findIndex(row => row.offsetTop >= list.scrollTop)
        return { top: list.scrollTop, firstVisible: { index, id: rows[index]!.dataset.id } }
      })
      t.ok(firstVisible.index >= 450, `scrolled into the second page (row ${firstVisible.index})`)
      await page.waitForFunction(expected => JSON.parse(localStorage.getItem('sprint-dashboard:history:v1') ?? '{}').logScroll?.top === expected, top)
      await page.click('#history .history-toggle')
      t.equal(await page.getAttribute('#history', 'data-collapsed'), 'true')

      await page.reload()
      await page.locator('#batch-view[data-state="ready"][data-batch="3"]').waitFor()
      t.equal(new URL(page.url()).hash, '#batch=3', 'the batch')
      t.equal(await page.getAttribute('body', 'data-view'), 'batch', 'the view')
      t.equal(await page.getAttribute('#batch-view th:has(.sort[data-sort="duration"])', 'aria-sort'), sortBefore, 'the sort')
      t.same(await attrs(page, '#batch-view .story-table tbody tr', 'data-story'), sortedBefore)
      t.equal(Number(await page.getAttribute('#batch-view .history-log', 'data-loaded')), loaded, 'as many events as were loaded')
      const after = await page.$eval('#batch-view .history-log', list => {
        const rows = [...list.children] as HTMLElement[]
        return { top: list.scrollTop, id: rows.find(row => row.offsetTop >= list.scrollTop)?.dataset.id }
      })
      t.ok(Math.abs(after.top - top) <= 1, 'the log\'s scroll position')
      t.equal(after.id, firstVisible.id, 'the same event at the top of the log')
      t.equal(await page.getAttribute('#history', 'data-collapsed'), 'true', 'the folded sidebar')
      t.notOk(await page.locator('#history .history-list').isVisible())
      await page.click('#history .history-toggle')
    })

    await t.test('the timeline draws 50 stories and 500 runs within 200 ms', async t => {
      const start = Date.now() - 86_400_000
      const events: Input[] = [{ type: 'batch:start', payload: { batch_id: 20, max_cycles: 'all' }, timestamp: start }]
      for (let run = 0; run < 10; run++) {
        for (let story = 0; story < 50; story++) {
          const ids = { story_key: `${1 + (story % 5)}-${story + 1}-story`, command: COMMANDS[run % 3]!, task_id: `task-${run}` }
          const at = start + run * 600_000 + story * 10_000
          events.push({ type: 'command:start', payload: ids, timestamp: at })
          events.push({ type: 'command:end', payload: { ...ids, status: (run * 50 + story) % 37 === 0 ? 'failed' : 'success', metrics: { tokens: 5000 } }, timestamp: at + 200_000 + story * 1000 })
        }
      }
      events.push({ type: 'batch:end', payload: { batch_id: 20, cycles_completed: 10, status: 'completed' }, timestamp: start + 6_500_000 })
      await post(server.url, events)

      await page.goto(`${server.url}/#batch=20`)
      await page.locator('#batch-view[data-state="ready"][data-batch="20"]').waitFor()
      t.equal(await page.locator('#batch-view .timeline .bar').count(), 500)
      t.equal(await page.locator('#batch-view .timeline .lane-label').count(), 50)
      const drawn = Number(await page.getAttribute('#batch-view .timeline', 'data-render-ms'))
      t.ok(drawn < 200, `the page's own draw took ${drawn} ms`)

      // The same draw measured from outside: build, style, layout and the next frame.
      const measured = await page.evaluate(async () => {
        // Resolved against the page, like its own modules (a variable, so tsc does not resolve them here).
        const modules = ['./timeline.js', './batch-model.js']
        const [{ createTimeline }, { modelFromDetail }] = await Promise.all(modules.map(async module => await import(module)))
        const detail = await (await fetch('api/batches/20')).json()
        const host = document.createElement('div')
        host.style.width = '1200px'
        document.body.append(host)
        const started = performance.now()
        const timeline = createTimeline(host, { now: Date.now })
        timeline.setModel(modelFromDetail(detail))
        host.getBoundingClientRect()
        await new Promise(resolve => requestAnimationFrame(resolve))
        const elapsed = performance.now() - started
        const bars = host.querySelectorAll('.bar').length
        host.remove()
        return { elapsed, bars }
      })
      t.equal(measured.bars, 500)
      t.ok(measured.elapsed < 200, `50 lanes and 500 bars drawn and laid out in ${measured.elapsed.toFixed(1)} ms`)
      t.comment(`timeline of 50 stories / 500 runs: ${drawn} ms to draw, ${measured.elapsed.toFixed(1)} ms to the next frame`)
    })

    await t.test('a screenshot of a timeline', async t => {
      await page.goto(`${server.url}/#batch=1`)
      await page.locator('#batch-view[data-state="ready"][data-batch="1"]').waitFor()
      await page.hover('#batch-view .bar.failed')
      await page.locator('#batch-view .timeline-tooltip').waitFor()
      // The panel and the tooltip hanging out of it, so the picture shows what hovering gives.
      const boxes = await Promise.all(['#batch-view .timeline-panel', '#batch-view .timeline-tooltip'].map(async selector => (await page.locator(selector).boundingBox())!))
      const x = Math.min(...boxes.map(b => b.x)) - 8
      const y = Math.min(...boxes.map(b => b.y)) - 8
      const clip = { x, y, width: Math.max(...boxes.map(b => b.x + b.width)) + 8 - x, height: Math.max(...boxes.map(b => b.y + b.height)) + 8 - y }
      const shot = path.join(artifacts, 'history-timeline.png')
      await page.screenshot({ path: shot, clip, animations: 'disabled' })
      if (process.env.UPDATE_DOCS_SCREENSHOTS === '1') await page.screenshot({ path: docsScreenshot, clip, animations: 'disabled' })
      await page.screenshot({ path: path.join(artifacts, 'history-batch-view.png'), animations: 'disabled' })
      t.comment(`screenshots: ${shot}${process.env.UPDATE_DOCS_SCREENSHOTS === '1' ? ` and ${docsScreenshot}` : ''}`)
      t.pass()
    })

    t.same(problems, [], 'no page errors and no CSP violations')
  })
}
