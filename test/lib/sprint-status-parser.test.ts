import t from 'tap'
import { createSprintStatusParser } from '../../src/lib/sprint-status-parser.ts'

/** The worker mirrors sprint-status.ts in plain JavaScript: both paths must agree, errors included. */
const corpus: Record<string, string> = {
  plain: 'project: demo\ngenerated: 2025-11-26\ndevelopment_status:\n  epic-1: in-progress\n  1-1-login: done\n  1-2-x: 3\n  1-3-y: true\n  1-4-empty: \'\'\n  1-5-null:\n  1-6-nested: {a: 1}\n  epic-1-retrospective: optional\n',
  merged: 'base: &base\n  1-1-a: backlog\n  1-2-b: backlog\ndevelopment_status:\n  <<: *base\n  1-2-b: done\n',
  long: `development_status:\n  ${'k'.repeat(257)}: done\n  1-1-ok: ${'s'.repeat(257)}\n  1-2-ok: "  padded  "\n`,
  empty: '',
  comment: '# nothing\n',
  noStatus: 'project: x\n',
  nullStatus: 'development_status:\n',
  list: '- a\n- b\n',
  scalar: 'just text\n',
  badStatus: 'development_status: [1, 2]\n',
  syntax: 'development_status:\n  1-1: done\n   1-2: [oops\n',
  duplicate: 'development_status:\n  1-1: done\n  1-1: backlog\n'
}

t.test('the worker and the calling thread give the same JSON, statuses and errors', async t => {
  const inline = createSprintStatusParser({ inlineBytes: Infinity })
  const worker = createSprintStatusParser({ inlineBytes: 0 })
  t.teardown(async () => { await inline.close(); await worker.close() })
  for (const [name, text] of Object.entries(corpus)) {
    const [a, b] = await Promise.allSettled([inline.parse(text), worker.parse(text)])
    if (a.status === 'fulfilled' && b.status === 'fulfilled') {
      t.same(b.value, a.value, name)
    } else {
      t.equal(b.status, a.status, `${name}: both fail`)
      const message = (r: PromiseSettledResult<unknown>): string => r.status === 'rejected' ? (r.reason as Error).message : ''
      t.equal(message(b), message(a), `${name}: same message`)
    }
  }
  const before = await inline.parse(corpus.plain!)
  const after = await inline.parse(corpus.merged!)
  t.same(await worker.diff(before.statuses, after.statuses, 1), await inline.diff(before.statuses, after.statuses, 1), 'diffs agree, limit included')
  t.same(await inline.diff(before.statuses, after.statuses, 1), {
    changes: [{ story_key: '1-1-a', old_status: null, new_status: 'backlog' }],
    changed: 2
  })
})

t.test('aliases that expand beyond the limit are refused in the worker, and the worker stays usable', async t => {
  const parser = createSprintStatusParser()
  t.teardown(() => parser.close())
  const lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
  for (let level = 1; level <= 9; level++) lines.push(`a${level}: &a${level} [${Array.from({ length: 10 }, () => `*a${level - 1}`).join(',')}]`)
  await t.rejects(parser.parse(lines.join('\n')), { code: 'SPRINT_FILE_TOO_LARGE', message: /FileLimits\.sprintStatusExpandedBytes/ })
  t.same(JSON.parse((await parser.parse('a: &a {x: 1}\nb: *a\n')).json), { a: { x: 1 }, b: { x: 1 } })
})

t.test('close rejects what waits and ends the thread', async t => {
  const parser = createSprintStatusParser({ inlineBytes: 0 })
  const pending = t.rejects(parser.parse('development_status:\n  1-1: done\n'), /closed/)
  await parser.close()
  await pending
  await t.rejects(parser.parse('a: 1\n'), /closed/)
})
