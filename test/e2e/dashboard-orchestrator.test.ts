import t from 'tap'
import { mkdir, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { listen, tempDir } from '../helper.ts'
import { launchChromium, logRow, requireChromium, waitForText, watchPageProblems } from './browser.ts'

/**
 * The dashboard in real Chromium fed the way the sprint runner's orchestrator.py feeds it: its own
 * event shapes, posted over HTTP with its own timestamps. Every assertion is about what the page shows.
 */

const screenshotDir = fileURLToPath(new URL('../../test-artifacts/', import.meta.url))

const sprintStatusYaml = `development_status:
  epic-3: contexted
  3-1-search-index: ready-for-dev
  3-2-search-ui: backlog
`

const row = logRow

if (requireChromium(t)) {
  t.test('the orchestrator\'s events on the live dashboard', async t => {
    const artifactsDir = await tempDir(t)
    await mkdir(artifactsDir, { recursive: true })
    await writeFile(path.join(artifactsDir, 'sprint-status.yaml'), sprintStatusYaml)
    const server = await listen(t, { artifactsDir, dbPath: ':memory:' })

    /** Posts one event as orchestrator.py's emit_event builds it: type, payload and a ms timestamp. */
    async function post (type: string, payload: Record<string, unknown>): Promise<{ id: number, timestamp: number }> {
      const response = await fetch(`${server.url}/api/events`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ type, payload, timestamp: Date.now() })
      })
      const body = await response.json() as { events: Array<{ id: number, timestamp: number }> }
      t.equal(response.status, 201, `${type} accepted`)
      return body.events[0]!
    }

    const browser = await launchChromium(t)
    const page = await browser.newPage({ viewport: { width: 1440, height: 900 } })
    page.setDefaultTimeout(10_000)
    const problems = watchPageProblems(page)
    await page.goto(`${server.url}/`)
    await page.locator('#connection[data-state="connected"]').waitFor()
    t.equal(await page.textContent('#stat-context'), '–', 'no context event yet')

    await t.test('an unlimited batch counts cycles without a total', async t => {
      await post('batch:start', { batch_id: 1, max_cycles: null, batch_mode: 'all' })
      t.equal(await waitForText(page, '#batch-state', /Running/), 'Running cycle 1')
      t.equal(await page.textContent('#stat-cycles'), '0')
      t.ok(await page.locator('#batch-progress.indeterminate').count(), 'no total, so no fraction')
    })

    await t.test('batch:warning raises a warning toast and a highlighted row; the context shows as unavailable', async t => {
      const failed = await post('context:copy_failed', { source: '/repo/_bmad-output/planning-artifacts/project-context.md', reason: 'Source file does not exist', message: 'project-context.md not found - agents will not have project context' })
      const warning = await post('batch:warning', { batch_id: 1, message: 'Project context not available - proceeding without context', warning_type: 'context_unavailable' })
      const toast = page.locator(`#toasts .toast[data-id="${warning.id}"]`)
      await toast.waitFor()
      t.equal(await toast.getAttribute('data-level'), 'warning', 'a warning toast, not an error one')
      t.match(await toast.innerText(), /batch:warning[\s\S]*Project context not available/)
      await toast.getByRole('button', { name: 'Details' }).click()
      t.match(await toast.locator('.toast-details').innerText(), /warning_type\s+context_unavailable/, 'the other fields one click away')
      await page.locator(`#toasts .toast[data-id="${failed.id}"][data-level="warning"]`).waitFor()
      t.equal(await page.getAttribute(row(warning.id), 'data-level'), 'warning', 'the log row is highlighted')
      t.equal(await page.getAttribute(row(failed.id), 'data-level'), 'warning')
      t.match(await page.textContent(`${row(failed.id)} .cell-text`), /not copied: Source file does not exist/)
      t.equal(await page.textContent('#stat-context'), 'Unavailable')
      t.equal(await page.getAttribute('#stat-context', 'data-tone'), 'bad')
      t.equal(await page.textContent('#stat-errors'), '0', 'warnings are not counted as errors')
    })

    await t.test('context events drive the context indicator', async t => {
      await post('context:refresh', { task_id: 12, status: 'started' })
      t.equal(await waitForText(page, '#stat-context', /Refreshing/), 'Refreshing…')
      const complete = await post('context:complete', { task_id: 12, status: 'completed' })
      t.equal(await waitForText(page, '#stat-context', /Refreshed/), 'Refreshed')
      await page.locator(row(complete.id)).waitFor()
      t.match(await page.textContent(row(complete.id)), /context.*12.*complete · completed/s)
      await post('context:copied', { source: '/repo/project-context.md', destination: '/repo/planning-artifacts/sprint-project-context.md', message: 'Project context copied for sprint batch' })
      t.equal(await waitForText(page, '#stat-context', /Ready/), 'Ready')
    })

    await t.test('a cycle with the orchestrator\'s command events and an injection warning', async t => {
      await post('cycle:start', { cycle_number: 1, story_keys: ['3-1-search-index'] })
      const start = await post('command:start', { story_key: '3-1-search-index', command: 'sprint-dev-story', task_id: 'implement', message: '' })
      await page.locator('#operations .operation[data-task="implement"]').waitFor()
      t.equal(await page.textContent(`${row(start.id)} .cell-text`), 'started', 'an empty message adds nothing')
      const injection = await post('injection:warning', { command: 'sprint-code-review', size_bytes: 125_000, threshold_bytes: 102_400, message: 'Injection size (125000 bytes) exceeds warning threshold' })
      const toast = page.locator(`#toasts .toast[data-id="${injection.id}"]`)
      await toast.waitFor()
      t.equal(await toast.getAttribute('data-level'), 'warning')
      t.match(await toast.innerText(), /injection:warning[\s\S]*exceeds warning threshold/)
      t.equal(await page.getAttribute(row(injection.id), 'data-level'), 'warning')
      t.match(await page.textContent(`${row(injection.id)} .cell-text`), /122 KB, over the 100 KB warning threshold/)
      const end = await post('command:end', { story_key: '3-1-search-index', command: 'sprint-dev-story', task_id: 'implement', message: 'tests pass', status: 'end' })
      await page.locator('#operations .operation[data-task="implement"]').waitFor({ state: 'detached' })
      t.equal(await page.textContent(`${row(end.id)} .cell-text`), 'end · tests pass')
      const moved = await post('cleanup:file_moved', { source: '/repo/impl/3-1-search-index.md', destination: '/repo/archived-artifacts/3-1-search-index.md', file_name: '3-1-search-index.md' })
      await page.locator(row(moved.id)).waitFor()
      t.equal(await page.getAttribute(row(moved.id), 'data-kind'), 'tasks')
      t.match(await page.textContent(`${row(moved.id)} .cell-text`), 'archived 3-1-search-index.md to archived-artifacts/3-1-search-index.md')
      await post('cycle:end', { cycle_number: 1, completed_stories: ['3-1-search-index'] })
      t.equal(await waitForText(page, '#batch-state', /cycle 2/), 'Running cycle 2')
      t.equal(await page.textContent('#stat-cycles'), '1')
    })

    await t.test('batch:end all_done shows "All stories done"', async t => {
      const end = await post('batch:end', { batch_id: 1, cycles_completed: 1, status: 'all_done' })
      t.equal(await waitForText(page, '#batch-state', /All stories/), 'All stories done')
      t.equal(await page.getAttribute('#batch', 'data-state'), 'all_done')
      t.match(await page.textContent(`${row(end.id)} .cell-text`), 'Batch #1 ended: all stories done after 1 cycle')
      t.match(await page.title(), /^All stories done/)
      await mkdir(screenshotDir, { recursive: true })
      const shot = path.join(screenshotDir, 'dashboard-orchestrator.png')
      await page.screenshot({ path: shot, animations: 'disabled' })
      t.comment(`screenshot: ${shot}`)
    })

    await t.test('stopped without cycles_completed keeps the count reached', async t => {
      await post('batch:start', { batch_id: 2, max_cycles: 3, batch_mode: 'fixed' })
      t.equal(await waitForText(page, '#batch-state', /Running/), 'Running cycle 1 of 3')
      await post('cycle:end', { cycle_number: 1, completed_stories: [] })
      t.equal(await waitForText(page, '#stat-cycles', /1 \/ 3/), '1 / 3')
      await post('batch:end', { batch_id: 2, status: 'stopped' })
      t.equal(await waitForText(page, '#batch-state', /Stopped/), 'Stopped')
      t.equal(await page.textContent('#stat-cycles'), '1 / 3')
    })

    await t.test('after a reload, init agrees with what the events showed', async t => {
      await page.reload()
      await page.locator('#connection[data-state="connected"]').waitFor()
      await page.locator('#log .row').first().waitFor()
      t.equal(await waitForText(page, '#batch-state', /Stopped/), 'Stopped', 'the last batch as the snapshot replays it')
      t.equal(await page.textContent('#stat-cycles'), '1 / 3')
      t.equal(await page.textContent('#stat-context'), 'Ready', 'the context indicator from the replayed events')
      t.equal(await page.locator('#toasts .toast').count(), 0, 'history raises no toasts')
    })

    t.same(problems, [], 'no page errors and no CSP violations')
  })
}
