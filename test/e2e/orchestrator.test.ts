import t from 'tap'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Envelope } from '../../src/events/schemas.ts'
import { extractStoryStatuses, parseSprintStatus } from '../../src/lib/sprint-status.ts'
import { startDemoServer } from '../../demo/run.ts'
import { listen, tempDir } from '../helper.ts'
import { launchChromium, requireChromium, waitForText, watchPageProblems } from './browser.ts'

/**
 * The sprint runner epic's integration scenario, in real Chromium against `npm run demo`'s setup
 * (the service with demo/orchestrator.ts as its orchestrator, on a copy of demo/sprint): set the batch
 * size, Start, watch it run, Stop in the middle of a story, Start again. Every assertion is about what
 * the page shows, what is on disk, or what the service recorded.
 */
t.setTimeout(300_000)

const fakeOrchestrator = fileURLToPath(new URL('../fixtures/fake-orchestrator.mjs', import.meta.url))

/** Every event the service stores, and a way to wait for the next one that matches. */
function recordEvents (events: { onEvent: (listener: (envelope: Envelope) => void) => () => void }) {
  const all: Envelope[] = []
  const waiters: Array<{ matches: (envelope: Envelope) => boolean, resolve: (envelope: Envelope) => void }> = []
  events.onEvent(envelope => {
    all.push(envelope)
    for (const waiter of [...waiters]) {
      if (!waiter.matches(envelope)) continue
      waiters.splice(waiters.indexOf(waiter), 1)
      waiter.resolve(envelope)
    }
  })
  return {
    all,
    next: (matches: (envelope: Envelope) => boolean) => new Promise<Envelope>(resolve => waiters.push({ matches, resolve }))
  }
}

const isCommand = (envelope: Envelope, type: 'command:start' | 'command:end', story: string, command: string): boolean =>
  envelope.type === type && envelope.payload.story_key === story && envelope.payload.command === command && envelope.payload.task_id === command

/** `story command` of every agent command started, in order. */
const commandsRun = (events: Envelope[]): string[] => events
  .filter(e => e.type === 'command:start' && e.payload.task_id === e.payload.command)
  .map(e => e.type === 'command:start' ? `${e.payload.story_key} ${e.payload.command}` : '')

if (requireChromium(t)) {
  t.test('run the sprint from the dashboard: start, stop mid-story, resume', async t => {
    const server = await startDemoServer({ agentDelayMs: 40 })
    t.teardown(() => server.close())
    const recorded = recordEvents(server.app.events)
    const statusesOnDisk = async () => extractStoryStatuses(parseSprintStatus(await readFile(path.join(server.artifactsDir, 'sprint-status.yaml'), 'utf8')))

    const browser = await launchChromium(t)
    const page = await browser.newPage({ viewport: { width: 1440, height: 900 } })
    page.setDefaultTimeout(30_000)
    const problems = watchPageProblems(page)
    await page.goto(`${server.url}/`)
    await page.locator('#orchestrator[data-loaded="true"]').waitFor()
    t.equal(await page.textContent('#orch-status'), 'Idle')
    t.ok(await page.isEnabled('#orch-start'))
    t.ok(await page.isDisabled('#orch-stop'), 'Stop is disabled while idle')
    t.equal(await page.getAttribute('#orch-stop', 'title'), 'Nothing is running')

    // Batch size 2, Start.
    await page.fill('#orch-batch-size', '2')
    await page.locator('#orch-batch-size').dispatchEvent('change')
    const devStory = recorded.next(e => isCommand(e, 'command:start', '1-1-user-registration', 'dev-story'))
    await page.click('#orch-start')
    t.match(await waitForText(page, '#orch-status', /Running cycle/), /^Running cycle 1\/2$/)
    t.ok(await page.isDisabled('#orch-start'), 'Start is disabled while running')
    t.equal(await page.getAttribute('#orch-start', 'title'), 'The orchestrator is already running')
    t.ok(await page.isDisabled('#orch-batch-size'))

    // Events stream in; sprint-status.yaml changes on disk and the board follows.
    await devStory
    t.equal((await statusesOnDisk()).get('1-1-user-registration'), 'in-progress', 'the orchestrator wrote the status to the file')
    t.equal(await waitForText(page, '.story[data-key="1-1-user-registration"] .badge', /in-progress/), 'in-progress', 'the board follows')
    await page.locator('#log .row[data-type="command:start"]').first().waitFor()
    await page.locator('#operations .operation').first().waitFor()

    // Stop in the middle of dev-story.
    const stopping = recorded.next(e => e.type === 'orchestrator:stopping')
    const devEnd = recorded.next(e => isCommand(e, 'command:end', '1-1-user-registration', 'dev-story'))
    const batchEnd = recorded.next(e => e.type === 'batch:end')
    const firstExit = recorded.next(e => e.type === 'orchestrator:exit')
    await page.click('#orch-stop')
    t.equal(await waitForText(page, '#orch-status', /Stopping/), 'Stopping…')
    t.equal(await page.textContent('#orch-stop'), 'Force stop', 'Stop becomes Force stop')
    const stoppingEvent = await stopping
    t.match(stoppingEvent.payload, { signal: 'SIGINT' })
    const devEndEvent = await devEnd
    t.ok(devEndEvent.id > stoppingEvent.id, 'the command in progress ended after the stop request')
    t.match(devEndEvent.payload, { status: 'success' }, 'and it ended normally, not interrupted')
    t.match((await batchEnd).payload, { status: 'stopped' })
    t.ok((await batchEnd).id > devEndEvent.id)
    t.match((await firstExit).payload, { code: 0, signal: null }, 'the orchestrator exited 0')
    t.equal(await waitForText(page, '#orch-status', /Stopped after/), 'Stopped after 0 cycles')
    t.equal(await page.textContent('#orch-stop'), 'Stop')
    t.ok(await page.isDisabled('#orch-stop'))
    t.equal(await waitForText(page, '.story[data-key="1-1-user-registration"] .badge', /review/), 'review', 'the finished command moved the story on')
    t.equal((await statusesOnDisk()).get('1-1-user-registration'), 'review')
    await page.locator('#operations .operation').first().waitFor({ state: 'detached' })
    const firstRun = recorded.all.splice(0)
    t.same(commandsRun(firstRun), ['1-1-user-registration create-story', '1-1-user-registration dev-story'])

    // Start again, this time for every story left: it continues with the next step and never repeats one.
    await page.check('#orch-all')
    t.ok(await page.isDisabled('#orch-batch-size'), 'All disables the batch size')
    const allDone = recorded.next(e => e.type === 'batch:end')
    const secondExit = recorded.next(e => e.type === 'orchestrator:exit')
    await page.click('#orch-start')
    t.match(await waitForText(page, '#orch-status', /Running cycle \d+$/), /^Running cycle 1$/, 'no limit shown for All')
    t.match((await allDone).payload, { status: 'all_done' })
    t.match((await secondExit).payload, { code: 0 })
    t.equal(await waitForText(page, '#orch-status', /All stories done/, 60_000), 'All stories done')
    const secondRun = recorded.all.splice(0)
    t.same(commandsRun(secondRun), [
      '1-1-user-registration code-review',
      ...['1-2-login-and-sessions', '1-3-password-reset', '2-1-board-view', '2-2-drag-and-drop-cards']
        .flatMap(story => ['create-story', 'dev-story', 'code-review'].map(command => `${story} ${command}`))
    ], 'the run continues from the next step of the stopped story')
    const everyCommand = [...commandsRun(firstRun), ...commandsRun(secondRun)]
    t.same(everyCommand, [...new Set(everyCommand)], 'no command ran twice for a story')
    const doneTransitions = [...firstRun, ...secondRun].filter(e => e.type === 'story:status' && e.payload.new_status === 'done')
    t.equal(doneTransitions.length, 5, 'each of the 5 stories was done once')
    t.ok([...(await statusesOnDisk()).values()].every(status => status === 'done'), 'every story is done on disk')
    await page.waitForFunction(() => [...document.querySelectorAll('.story .badge')].every(badge => badge.textContent === 'done'))

    // The output panel tails what the orchestrator printed.
    await page.click('#orch-output summary')
    await waitForText(page, '#orch-output-lines', /stop requested: finishing the command in progress/)
    t.match(await page.textContent('#orch-output-lines'), /cycle 1: 1-1-user-registration, 1-2-login-and-sessions/)

    // Batch size and All survive a reload.
    await page.reload()
    await page.locator('#orchestrator[data-loaded="true"]').waitFor()
    t.ok(await page.isChecked('#orch-all'), 'All is remembered')
    t.equal(await page.inputValue('#orch-batch-size'), '2', 'and so is the batch size')
    t.equal(await page.textContent('#orch-status'), 'All stories done')
    t.same(problems, [], 'no page errors or CSP violations')
  })

  t.test('no orchestrator configured: both buttons disabled, with the reason', async t => {
    const { url } = await listen(t)
    const browser = await launchChromium(t)
    const page = await browser.newPage()
    await page.goto(`${url}/`)
    await page.locator('#orchestrator[data-loaded="true"]').waitFor()
    t.ok(await page.isDisabled('#orch-start'))
    t.ok(await page.isDisabled('#orch-stop'))
    t.match(await page.getAttribute('#orch-start', 'title'), /No orchestrator is configured/)
    t.match(await page.getAttribute('#orch-stop', 'title'), /No orchestrator is configured/)
    t.match(await page.getAttribute('.orch-buttons', 'title'), /No orchestrator is configured/, 'the tooltip shows on the disabled buttons too')
  })

  t.test('with a token: the page asks for it once and keeps it for the tab', async t => {
    const dir = await tempDir(t)
    const { url } = await listen(t, {
      ingestToken: 'e2e-token',
      orchestrator: { command: [process.execPath, fakeOrchestrator, 'obedient', '{batch_size}'], env: { FAKE_ORCHESTRATOR_RECORD: path.join(dir, 'record.json') } }
    })
    const browser = await launchChromium(t)
    const page = await browser.newPage()
    const prompts: string[] = []
    page.on('dialog', dialog => {
      prompts.push(dialog.message())
      dialog.accept('e2e-token').catch(() => {})
    })
    await page.goto(`${url}/`)
    await page.locator('#orchestrator[data-loaded="true"]').waitFor()
    await page.click('#orch-start')
    // "Starting…" shows before the 401 comes back; the token is kept only once the prompt was answered.
    await page.waitForFunction(() => sessionStorage.getItem('sprint-dashboard:token') !== null)
    await waitForText(page, '#orch-status', /Running|Starting/)
    t.equal(prompts.length, 1, 'asked once')
    t.match(prompts[0], /ingest token/)
    t.equal(await page.evaluate(() => sessionStorage.getItem('sprint-dashboard:token')), 'e2e-token')
    await page.click('#orch-stop')
    await waitForText(page, '#orch-status', /^Idle$/)
    t.equal(prompts.length, 1, 'not asked again for Stop')
    t.equal(await page.textContent('#orch-error'), '', 'no error shown')
  })
}
