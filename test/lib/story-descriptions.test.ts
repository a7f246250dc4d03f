import t from 'tap'
import { mkdir, writeFile, symlink } from 'node:fs/promises'
import path from 'node:path'
import { extractDescription, scanStoryDescriptions, MAX_STORY_FILE_BYTES } from '../../src/lib/story-descriptions.ts'
import { tempDir } from '../helper.ts'

t.test('the ## Story section: bold removed, newlines folded, cut at the next ## heading', async t => {
  const md = '# 2a-1: Login\n\nStatus: draft\n\n## Story:\n\nAs an **operator**,\r\nI want to **log in**,\n\n\nso that I can work.\n\n## Acceptance Criteria\n- one\n'
  t.equal(extractDescription(md), 'As an operator, I want to log in, so that I can work.')
})

t.test('the section runs to the end of the file when no heading follows', async t => {
  t.equal(extractDescription('## Story\nline one\nline two\n'), 'line one line two')
})

t.test('without ## Story: up to 9 lines under the title, blank ones skipped, stopping at a heading', async t => {
  t.equal(extractDescription('# Title\n\nFirst line.\n  Second line.  \n\n### Sub\nnot this'), 'First line. Second line.')
  const lines = Array.from({ length: 12 }, (_, i) => `l${i + 1}`).join('\n')
  t.equal(extractDescription(`# Title\n${lines}`), 'l1 l2 l3 l4 l5 l6 l7 l8 l9')
})

t.test('cut to 500 characters, no ellipsis', async t => {
  const description = extractDescription(`## Story\n${'a'.repeat(800)}`)
  t.equal(description, 'a'.repeat(500))
})

t.test('no title and no story section, or an empty one: no description', async t => {
  t.equal(extractDescription('just text\nno headings'), null)
  t.equal(extractDescription('## Story\n\n## Tasks\n- x'), null)
})

t.test('scanning a directory: story files only, by id, bounded in size', async t => {
  const dir = await tempDir(t)
  const files: Record<string, string> = {
    '2a-1-login-page.md': '# Login\n\n## Story\nAs a user I log in.\n',
    '10-3-export.md': '# Export\nExports the **report**.\n',
    '3b-2-no-desc.md': 'nothing here',
    'tech-spec-2a-1.md': '## Story\nnot a story',
    'index.md': '## Story\nnot a story',
    'orchestrator.md': '## Story\nnot a story',
    'notes.md': '## Story\nnot matching the pattern',
    '2a-x.txt': '## Story\nnot markdown'
  }
  for (const [name, text] of Object.entries(files)) await writeFile(path.join(dir, name), text)
  await writeFile(path.join(dir, '4-1-huge.md'), `## Story\n${'x'.repeat(MAX_STORY_FILE_BYTES)}`)
  await mkdir(path.join(dir, '5-1-a-directory.md'))
  t.same(await scanStoryDescriptions(dir), {
    '2a-1-login-page': 'As a user I log in.',
    '10-3-export': 'Exports the **report**.'
  })
})

t.test('a missing directory yields {}; a dangling symlink is skipped', async t => {
  const dir = await tempDir(t)
  t.same(await scanStoryDescriptions(path.join(dir, 'missing')), {})
  await symlink(path.join(dir, 'nowhere.md'), path.join(dir, '1-1-dangling.md'))
  t.same(await scanStoryDescriptions(dir), {})
})
