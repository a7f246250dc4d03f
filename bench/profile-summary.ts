import { readFileSync } from 'node:fs'
import path from 'node:path'
import { parseArgs } from 'node:util'

/**
 * `npx tsx bench/profile-summary.ts <file.cpuprofile>...` — where a profiled
 * bench process (run with `npm run bench -- --profile`) spent its time: self
 * time by function and by package, so the service's broadcast path can be
 * compared with the baseline's without opening DevTools.
 */

interface ProfileNode {
  id: number
  callFrame: { functionName: string, url: string, lineNumber: number }
  children?: number[]
}

interface CpuProfile {
  nodes: ProfileNode[]
  startTime: number
  endTime: number
  samples: number[]
  timeDeltas: number[]
}

/** Groups a script URL by what owns it: a package in node_modules, our src/ or bench/, or Node itself. */
function ownerOf (url: string): string {
  if (url === '') return '(native/VM)'
  const modules = url.lastIndexOf('node_modules/')
  if (modules !== -1) {
    const rest = url.slice(modules + 'node_modules/'.length).split('/')
    return rest[0]?.startsWith('@') === true ? `${rest[0]}/${rest[1]}` : (rest[0] ?? url)
  }
  if (url.startsWith('node:')) return 'node core'
  const src = url.indexOf('/src/')
  if (src !== -1) return url.slice(src + 1)
  const bench = url.indexOf('/bench/')
  if (bench !== -1) return url.slice(bench + 1)
  return url
}

export function summariseProfile (file: string, top = 25): string {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile
  const byId = new Map(profile.nodes.map((node) => [node.id, node]))
  const selfUs = new Map<number, number>()
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i] as number
    selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0))
  }
  const totalUs = profile.endTime - profile.startTime
  const idleUs = [...selfUs].filter(([id]) => byId.get(id)?.callFrame.functionName === '(idle)').reduce((a, [, us]) => a + us, 0)
  const busyUs = totalUs - idleUs

  const byFunction = new Map<string, number>()
  const byOwner = new Map<string, number>()
  for (const [id, us] of selfUs) {
    const frame = byId.get(id)?.callFrame
    if (frame === undefined || frame.functionName === '(idle)') continue
    const key = `${frame.functionName || '(anonymous)'} ${frame.url === '' ? '' : `${ownerOf(frame.url)}:${frame.lineNumber + 1}`}`
    byFunction.set(key, (byFunction.get(key) ?? 0) + us)
    const owner = ['(garbage collector)', '(program)'].includes(frame.functionName) ? frame.functionName : ownerOf(frame.url)
    byOwner.set(owner, (byOwner.get(owner) ?? 0) + us)
  }
  const rows = (map: Map<string, number>, n: number): string[] => [...map].sort((a, b) => b[1] - a[1]).slice(0, n)
    .map(([key, us]) => `${(100 * us / busyUs).toFixed(1).padStart(5)} %  ${(us / 1000).toFixed(0).padStart(7)} ms  ${key}`)

  return [
    `${path.basename(file)}: ${(totalUs / 1e6).toFixed(1)} s profiled, ${(busyUs / 1e6).toFixed(2)} s busy`,
    '  self time by owner:',
    ...rows(byOwner, 12).map((r) => `    ${r}`),
    `  self time by function (top ${top}):`,
    ...rows(byFunction, top).map((r) => `    ${r}`)
  ].join('\n')
}

const { positionals, values } = parseArgs({ allowPositionals: true, options: { top: { type: 'string', default: '25' } } })
if (positionals.length === 0) {
  console.error('usage: npx tsx bench/profile-summary.ts [--top N] <file.cpuprofile>...')
  process.exitCode = 1
}
for (const file of positionals) console.log(summariseProfile(file, Number(values.top)) + '\n')
