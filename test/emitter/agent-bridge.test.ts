import t from 'tap'
/** The agent bridge's three parts: stream-json translation, task-log lines and progress coalescing. */
import { condense, type BridgeEvent } from '../../src/emitter/bridge-events.ts'
import { createProgressCoalescer } from '../../src/emitter/progress-coalescer.ts'
import { createAgentStreamTranslator, describeToolUse, exitCodeOf } from '../../src/emitter/stream-json.ts'
import { parseTaskLogLine, taskLogEvents } from '../../src/emitter/task-log.ts'
import { devStoryMetrics, readFixtureLines } from '../fixtures/fake-agent.ts'

const context = { storyKey: '1-2', command: 'dev-story', taskId: 'dev-story' }
const vars = { story_key: '1-2', epic: '1', command: 'dev-story' }

function translateFixture (name: string) {
  const translator = createAgentStreamTranslator(context)
  const events: BridgeEvent[] = []
  for (const line of readFixtureLines(name, vars)) events.push(...translator.translateLine(line))
  return { translator, events }
}

t.test('condense makes one line and cuts it with an ellipsis', async (t) => {
  t.equal(condense('  a\n\n b\tc  '), 'a b c')
  const cut = condense('x'.repeat(300), 20)
  t.equal(cut.length, 20)
  t.ok(cut.endsWith('…'))
  t.equal(condense('short', 20), 'short')
})

t.test('parseTaskLogLine', async (t) => {
  t.same(parseTaskLogLine('1732630000,2a,2a-1,dev-story,implement,start,"Implementing, carefully"'), {
    ok: true,
    entry: { timestamp: '1732630000', epicId: '2a', storyKey: '2a-1', command: 'dev-story', taskId: 'implement', status: 'start', message: 'Implementing, carefully' }
  })
  t.same(parseTaskLogLine('2025-11-26T10:00:00Z,1,1-1,code-review,review,success,"He said ""ok"""\r'), {
    ok: true,
    entry: { timestamp: '2025-11-26T10:00:00Z', epicId: '1', storyKey: '1-1', command: 'code-review', taskId: 'review', status: 'success', message: 'He said "ok"' }
  })
  const bare = parseTaskLogLine('1732630000,1,1-1,dev-story,tests,failed,bare message, with a comma')
  t.ok(bare.ok)
  if (bare.ok) t.equal(bare.entry.message, 'bare message, with a comma')
  const empty = parseTaskLogLine('1732630000,1,1-1,dev-story,tests,failed,')
  t.ok(empty.ok, 'an empty message is allowed')

  for (const [line, reason] of [
    ['', /empty/],
    ['timestamp,epicID,storyID,command,task-id,status,message', /timestamp/],
    ['1732630000,1,1-1,dev-story,start,"too few"', /7 fields/],
    ['1732630000,1,,dev-story,tests,start,"x"', /storyID is empty/],
    ['1732630000,1,1-1,dev story,tests,start,"x"', /command/],
    ['1732630000,1,1-1,dev-story,tests,start,"unterminated', /quote/],
    [`1732630000,1,${'k'.repeat(300)},dev-story,tests,start,"x"`, /longer/],
    ['hello, world', /7 fields/]
  ] as const) {
    const result = parseTaskLogLine(line)
    t.notOk(result.ok, line)
    if (!result.ok) t.match(result.reason, reason, line)
  }
})

t.test('taskLogEvents: start → command:start then message; end → message then command:end', async (t) => {
  const ids = { story_key: '1-1', command: 'dev-story', task_id: 'tests' }
  const start = parseTaskLogLine('1732630000,1,1-1,dev-story,tests,start,"Writing tests"')
  const end = parseTaskLogLine('1732630000,1,1-1,dev-story,tests,failed,')
  t.ok(start.ok && end.ok)
  if (!start.ok || !end.ok) return
  t.same(taskLogEvents(start.entry), [
    { type: 'command:start', payload: ids },
    { type: 'command:progress', payload: { ...ids, message: 'Writing tests' } }
  ])
  t.same(taskLogEvents(end.entry), [{ type: 'command:end', payload: { ...ids, status: 'failed' } }])
})

t.test('describeToolUse', async (t) => {
  const cwd = '/home/dev/project'
  t.equal(describeToolUse('Edit', { file_path: '/home/dev/project/src/foo.ts' }, cwd), 'Edit src/foo.ts')
  t.equal(describeToolUse('Read', { file_path: '/etc/hosts' }, cwd), 'Read /etc/hosts')
  t.equal(describeToolUse('Write', {}, cwd), 'Write')
  t.equal(describeToolUse('Bash', { command: 'npm test', description: 'Run tests' }), 'Bash: npm test')
  t.equal(describeToolUse('Bash', { command: `echo ${'x'.repeat(500)}` }).length, 'Bash: '.length + 120, 'long commands are cut')
  t.equal(describeToolUse('Grep', { pattern: 'TODO', path: '/home/dev/project/src' }, cwd), 'Grep: TODO in src')
  t.equal(describeToolUse('Glob', { pattern: '**/*.ts' }), 'Glob: **/*.ts')
  t.equal(describeToolUse('WebFetch', { url: 'https://example.com' }), 'WebFetch: https://example.com')
  t.equal(describeToolUse('WebSearch', { query: 'fastify 5' }), 'WebSearch: fastify 5')
  t.equal(describeToolUse('Task', { description: 'Find usages' }), 'Task: Find usages')
  t.equal(describeToolUse('NotebookEdit', { notebook_path: '/home/dev/project/a.ipynb' }, cwd), 'NotebookEdit a.ipynb')
  t.equal(describeToolUse('TodoWrite', { todos: [{ content: 'a', status: 'pending' }] }), 'TodoWrite: 1 todos')
  t.equal(describeToolUse('TodoWrite', { todos: [{ content: 'Fix it', activeForm: 'Fixing it', status: 'in_progress' }] }), 'Todo: Fixing it')
  t.equal(describeToolUse('mcp__github__create_issue', { title: 'Bug', body: 'x' }), 'mcp__github__create_issue: Bug')
  t.equal(describeToolUse('Mystery', null), 'Mystery')
})

t.test('dev-story fixture: progress lines, embedded task-log events, metrics', async (t) => {
  const { translator, events } = translateFixture('dev-story')
  t.equal(translator.malformedLines, 0)
  const progress = events.filter((event) => event.type === 'command:progress' && event.payload.task_id === 'dev-story').map((event) => (event.payload as { message: string }).message)
  t.same(progress.slice(0, 4), [
    'Agent session started (claude-sonnet-4-5-20250929)',
    'Starting implementation of 1-2. Reading the story file.',
    'Read _bmad-output/stories/1-2.md',
    'Todo: Writing failing tests'
  ])
  t.ok(progress.includes('Edit src/parser.ts'))
  t.ok(progress.includes('Bash: npm test -- test/parser.test.ts'))
  t.ok(progress.includes('Bash failed: FAIL test/parser.test.ts'), 'a failing tool result is shown')
  t.ok(progress.every((message) => !message.includes('\n') && message.length <= 200))

  const lifecycle = events.filter((event) => event.type !== 'command:progress').map((event) => `${event.type} ${event.payload.task_id}${event.type === 'command:end' ? ' ' + event.payload.status : ''}`)
  t.same(lifecycle, [
    'command:start tests',
    'command:end tests success',
    'command:start implement',
    'command:end implement success'
  ])
  const taskStart = events.find((event) => event.type === 'command:start')
  t.same(taskStart?.payload, { story_key: '1-2', command: 'dev-story', task_id: 'tests' })

  t.same(translator.result?.metrics, devStoryMetrics)
  const end = translator.finish({ exitCode: 0, durationMs: 1234 })
  t.equal(end.type, 'command:end')
  t.match(end.payload, { story_key: '1-2', command: 'dev-story', task_id: 'dev-story', status: 'success', metrics: { duration_ms: 48211, exit_code: 0 } })
})

t.test('code-review fixture skips thinking blocks', async (t) => {
  const { events } = translateFixture('code-review')
  const messages = events.filter((event) => event.type === 'command:progress').map((event) => (event.payload as { message: string }).message)
  t.ok(messages.includes('No blocking findings. One suggestion: document CRLF handling.'))
  t.notOk(messages.some((message) => message.includes('split handles CRLF')))
  t.ok(messages.includes('Glob: src/**/*.ts'))
})

t.test('error fixture: malformed lines counted, is_error result gives an error end', async (t) => {
  const { translator, events } = translateFixture('error-run')
  t.equal(translator.malformedLines, 3)
  const messages = events.filter((event) => event.type === 'command:progress').map((event) => (event.payload as { message: string }).message)
  t.ok(messages.includes('Agent error: Could not build: typescript is not installed.'))
  t.ok(events.some((event) => event.type === 'command:end' && event.payload.task_id === 'implement' && event.payload.status === 'failed'))
  const end = translator.finish({ exitCode: 0 })
  t.equal(end.type === 'command:end' && end.payload.status, 'error', 'is_error wins over exit code 0')
  t.equal(translator.result?.subtype, 'error_during_execution')
})

t.test('finish without a result message', async (t) => {
  const translator = createAgentStreamTranslator(context)
  t.same(translator.translateLine(''), [])
  t.same(translator.translateLine('{"type":"stream_event","event":{}}'), [], 'unknown kinds are ignored, not malformed')
  t.same(translator.translateLine('{"type":"system","subtype":"compact_boundary"}'), [])
  t.same(translator.translateLine('{"no":"type"}'), [])
  t.same(translator.translateLine('{"type":"assistant"}'), [])
  t.equal(translator.malformedLines, 1)
  t.same(translator.finish({ exitCode: 2, durationMs: 10.4 }), {
    type: 'command:end',
    payload: { story_key: '1-2', command: 'dev-story', task_id: 'dev-story', status: 'error', metrics: { duration_ms: 10, exit_code: 2 } }
  })
  t.equal(translator.finish({ exitCode: 0 }).payload.status, 'success')
})

t.test('duplicate task-log lines in tool results are one phase', async (t) => {
  const translator = createAgentStreamTranslator(context)
  const line = '1732630000,1,1-2,dev-story,tests,start,"x"'
  const result = (content: unknown) => JSON.stringify({ type: 'user', message: { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'a', content }] } })
  t.equal(translator.translateLine(result(line)).length, 2)
  t.equal(translator.translateLine(result([{ type: 'text', text: `header\n${line}\n` }])).length, 0)
})

t.test('exitCodeOf follows the shell convention for signals', async (t) => {
  t.equal(exitCodeOf({ exitCode: 3 }), 3)
  t.equal(exitCodeOf({ exitCode: null, signal: 'SIGTERM' }), 143)
  t.equal(exitCodeOf({ exitCode: null, signal: 'SIGINT' }), 130)
  t.equal(exitCodeOf({ exitCode: null, signal: 'SIGUSR2' }), 1)
  t.equal(exitCodeOf({ exitCode: null }), 1)
})

function fakeClock () {
  let time = 0
  const timers = new Map<number, { at: number, callback: () => void }>()
  let nextId = 1
  return {
    now: () => time,
    setTimer: (callback: () => void, ms: number) => {
      const id = nextId++
      timers.set(id, { at: time + ms, callback })
      return id
    },
    clearTimer: (id: unknown) => { timers.delete(id as number) },
    advance (ms: number) {
      const target = time + ms
      for (;;) {
        const due = [...timers.entries()].filter(([, timer]) => timer.at <= target).sort((a, b) => a[1].at - b[1].at)[0]
        if (due === undefined) break
        timers.delete(due[0])
        time = due[1].at
        due[1].callback()
      }
      time = target
    },
    get timerCount () { return timers.size }
  }
}

function progressEvent (message: string, taskId = 'dev-story'): Extract<BridgeEvent, { type: 'command:progress' }> {
  return { type: 'command:progress', payload: { story_key: '1-2', command: 'dev-story', task_id: taskId, message } }
}

t.test('coalescer: first at once, latest wins within the interval, flush sends the rest', async (t) => {
  const clock = fakeClock()
  const sent: string[] = []
  const coalescer = createProgressCoalescer({ intervalMs: 250, emit: (event) => sent.push(event.payload.message), ...clock })
  coalescer.push(progressEvent('a'))
  t.same(sent, ['a'], 'the first one goes out immediately')
  coalescer.push(progressEvent('b'))
  coalescer.push(progressEvent('c'))
  t.same(sent, ['a'])
  t.equal(coalescer.pendingCount, 1)
  clock.advance(249)
  t.same(sent, ['a'])
  clock.advance(1)
  t.same(sent, ['a', 'c'], 'latest wins once the interval is over')
  t.equal(clock.timerCount, 0)

  coalescer.push(progressEvent('d'))
  coalescer.push(progressEvent('other task', 'tests'))
  t.same(sent, ['a', 'c', 'other task'], 'commands/tasks are limited separately')
  coalescer.flush()
  t.same(sent, ['a', 'c', 'other task', 'd'], 'flush sends what is pending')
  t.equal(clock.timerCount, 0, 'flush cancels the timers')
  coalescer.flush()
  t.equal(sent.length, 4, 'nothing is sent twice')

  clock.advance(1000)
  coalescer.push(progressEvent('e'))
  t.same(sent.at(-1), 'e', 'after a quiet period the next one goes out at once again')
})

t.test('coalescer: a chatty stream is held to the rate', async (t) => {
  const clock = fakeClock()
  const sent: string[] = []
  const coalescer = createProgressCoalescer({ intervalMs: 250, emit: (event) => sent.push(event.payload.message), ...clock })
  for (let i = 0; i < 1000; i++) {
    coalescer.push(progressEvent(String(i)))
    clock.advance(1)
  }
  coalescer.flush()
  t.ok(sent.length <= 6, `1000 events in one second became ${sent.length}`)
  t.equal(sent.at(-1), '999', 'the last one is never dropped')
})

t.test('coalescer with real timers', async (t) => {
  const sent: string[] = []
  const done = new Promise<void>((resolve) => {
    const coalescer = createProgressCoalescer({
      intervalMs: 20,
      emit: (event) => {
        sent.push(event.payload.message)
        if (event.payload.message === 'last') resolve()
      }
    })
    coalescer.push(progressEvent('first'))
    coalescer.push(progressEvent('dropped'))
    coalescer.push(progressEvent('last'))
  })
  await done
  t.same(sent, ['first', 'last'])
})
