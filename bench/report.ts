import type { EmitCostResult } from './emit-cost.ts'
import type { ServerKind, WindowResult } from './session.ts'

/** The JSON the runner writes to bench/results/<timestamp>.json, and the tables it prints from it. */

export interface ConnectionRow {
  server: ServerKind
  batch: boolean
  clients: number
  /** Handshakes in flight at once (all of them for the storm). */
  concurrency: number
  /** From the first connect to the last `init` received. */
  connectMs: number
  /** CPU the server and the client processes spent while connecting. */
  connectServerCpuMs: number
  connectClientCpuMs: number
  rssBeforeMiB: number
  rssAfterMiB: number
  rssPerConnectionKiB: number
  heapPerConnectionKiB: number
  idleCpuPercent: number
  idleEventLoopDelayMaxMs: number
  heartbeatIntervalMs: number | undefined
}

/** The connection storm: `clients` raw handshakes opened at once, timed until the last `init` arrived. */
export interface StormRow {
  server: ServerKind
  batch: boolean
  clients: number
  ms: number
  failed: number
  clientCpuMs: number
  errors: string[]
}

/**
 * A measured window and what it was for: a cell of the matrix, the same N again at a rate the baseline
 * sustains (where it fell behind the cell's target), a trial of the rate search, or the heartbeat session.
 */
export type ReportedWindow = WindowResult & { phase: 'matrix' | 'equal-rate' | 'search' | 'heartbeat' }

export interface SearchResult {
  server: ServerKind
  batch: boolean
  clients: number
  seconds: number
  /** Highest rate tried that kept p99 under the budget with no loss and ≥ 95 % of the target rate achieved; 0 if none did. */
  maxRate: number
  tried: Array<{ rate: number, p99: number, achieved: number, lost: number, pass: boolean }>
}

export interface BenchReport {
  startedAt: string
  durationS: number
  command: string
  machine: { cpus: number, model: string, memoryGiB: number, node: string, platform: string }
  config: Record<string, unknown>
  fdLimit: { wanted: number, got: number[] }
  emitCost: EmitCostResult | undefined
  storms: StormRow[]
  connections: ConnectionRow[]
  windows: ReportedWindow[]
  searches: SearchResult[]
  notes: string[]
}

const label = (row: { server: ServerKind, batch: boolean }): string => row.server + (row.batch ? '+batch' : '')

function fixed (value: number, digits = 1): string {
  if (!Number.isFinite(value)) return '–'
  return value.toFixed(digits)
}

function table (header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)))
  const line = (cells: string[]): string => '| ' + cells.map((c, i) => i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0)).join(' | ') + ' |'
  return [line(header), '|' + widths.map((w, i) => i === 0 ? ` ${'-'.repeat(w)} ` : ` ${'-'.repeat(w - 1)}: `).join('|') + '|', ...rows.map(line)].join('\n')
}

/** The middle value (mean of the two middle ones for an even count): one disturbed window of a few cannot move it. */
export function median (values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  if (sorted.length === 0) return Number.NaN
  const middle = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2
}

/**
 * Windows of one phase matched by (N, target rate); with --repeat, the median over the rounds of each
 * variant, then service ÷ baseline. Columns: N, ev/s, then per service variant CPU ×, p99 ×, and the rate
 * each side achieved (service / baseline), so a ratio between different loads shows as one.
 */
function ratioRows (report: BenchReport, phase: ReportedWindow['phase']): string[][] {
  const cells = report.windows.filter((w) => w.phase === phase)
  const keys = [...new Set(cells.map((w) => `${w.clients}/${w.targetRate}`))]
  const rows: string[][] = []
  for (const key of keys) {
    const at = cells.filter((w) => `${w.clients}/${w.targetRate}` === key)
    const baseline = at.filter((w) => w.server === 'baseline')
    if (baseline.length === 0) continue
    const cpu = median(baseline.map((w) => w.serverCpuUsPerDelivered))
    const p50 = median(baseline.map((w) => w.latencyMs.p50))
    const p99 = median(baseline.map((w) => w.latencyMs.p99))
    const achieved = median(baseline.map((w) => w.achievedRate))
    const of = (batch: boolean): string[] => {
      const service = at.filter((w) => w.server === 'service' && w.batch === batch)
      if (service.length === 0) return ['–', '–', '–', '–']
      return [
        fixed(median(service.map((w) => w.serverCpuUsPerDelivered)) / cpu, 2),
        fixed(median(service.map((w) => w.latencyMs.p50)) / p50, 2),
        fixed(median(service.map((w) => w.latencyMs.p99)) / p99, 2),
        `${fixed(median(service.map((w) => w.achievedRate)))} / ${fixed(achieved)}`
      ]
    }
    const [first] = at
    rows.push([String(first?.clients), String(first?.targetRate), String(baseline.length), ...of(false), ...of(true)])
  }
  return rows
}

/**
 * With --repeat, one row per (variant, N, target rate) of a phase: the median of each column over the rounds,
 * the p99 range beside it, and loss summed, so the rounds read at a glance. Undefined for a single round.
 */
function medianTable (windows: ReportedWindow[]): string | undefined {
  const groups = new Map<string, ReportedWindow[]>()
  for (const w of windows) {
    const key = `${label(w)}/${w.clients}/${w.targetRate}`
    groups.set(key, [...(groups.get(key) ?? []), w])
  }
  if ([...groups.values()].every((group) => group.length < 2)) return undefined
  const of = (group: ReportedWindow[], pick: (w: ReportedWindow) => number): number => median(group.map(pick))
  return table(
    ['server', 'N', 'ev/s target', 'rounds', 'ev/s achieved', 'lost', 'p50 ms', 'p99 ms', 'p99 range ms', 'CPU µs/msg', 'server CPU %', 'client CPU %', 'ev/frame'],
    [...groups.values()].map((group) => {
      const [first] = group as [ReportedWindow, ...ReportedWindow[]]
      const p99s = group.map((w) => w.latencyMs.p99)
      return [
        label(first), String(first.clients), String(first.targetRate), String(group.length), fixed(of(group, (w) => w.achievedRate)),
        String(group.reduce((total, w) => total + w.lost + w.gaps + w.duplicates, 0)), fixed(of(group, (w) => w.latencyMs.p50), 2),
        fixed(median(p99s), 2), `${fixed(Math.min(...p99s), 1)}–${fixed(Math.max(...p99s), 1)}`, fixed(of(group, (w) => w.serverCpuUsPerDelivered), 2),
        fixed(of(group, (w) => w.serverCpuPercent), 0), fixed(of(group, (w) => w.clientCpuPercent), 0), fixed(of(group, (w) => w.eventsPerFrame), 2)
      ]
    })
  )
}

const RATIO_HEADER = ['N', 'ev/s', 'rounds', 'service CPU ×', 'service p50 ×', 'service p99 ×', 'ev/s achieved (service / baseline)',
  'service+batch CPU ×', 'service+batch p50 ×', 'service+batch p99 ×', 'ev/s achieved (service+batch / baseline)']

export function formatReport (report: BenchReport): string {
  const out: string[] = []
  out.push(`sprint-dashboard fan-out benchmark — ${report.startedAt}, ${report.machine.cpus} × ${report.machine.model}, Node ${report.machine.node}`)
  out.push(`command: ${report.command} (${report.durationS.toFixed(0)} s)`)
  const emitters = [...new Set(report.windows.map((w) => w.emitter))]
  if (emitters.length > 0) out.push(`emitter: ${emitters.join(', ')} (turn: one event per event-loop turn; burst: every due event in one turn; http: one POST /api/events per event from another process)`)
  const limits = report.fdLimit.got
  const low = limits.filter((l) => l < report.fdLimit.wanted)
  out.push(low.length === 0
    ? `fd limit: raised to ${report.fdLimit.wanted} in every child`
    : `fd limit: could not raise to ${report.fdLimit.wanted} (hard limit); children run with ${[...new Set(limits)].join(', ')}`)
  if (report.emitCost !== undefined) {
    const e = report.emitCost
    out.push(`emit with no clients (validate + SQLite append, in-process): ${fixed(e.usPerEvent, 2)} µs/event over ${e.events} events (p99 of 1,000-event slices ${fixed(e.sliceP99UsPerEvent, 2)} µs/event)`)
  }

  out.push('', 'Fan-out (latency = emit → receipt in the client process; emit lag = how late the starved emitter emitted against its schedule,',
    'which latency does not include; CPU µs/msg = server user+system over the window ÷ messages delivered; CPU % are of one core;',
    'other load = CPU used by anything else on the machine during the window)', '')
  const windowTable = (windows: ReportedWindow[]): string => table(
    ['server', 'N', 'ev/s target', 'ev/s achieved', 'emit lag p99 ms', 'delivered', 'lost', 'p50 ms', 'p99 ms', 'p99.9 ms', 'max ms', 'CPU µs/msg', 'server CPU %', 'client CPU %', 'other load %', 'peak RSS MiB', 'ev/frame', 'loop lag p99 ms'],
    windows.map((w) => [
      label(w), String(w.clients), String(w.targetRate), fixed(w.achievedRate), fixed(w.scheduleLagP99Ms, 0), String(w.delivered),
      String(w.lost + w.gaps + w.duplicates), fixed(w.latencyMs.p50, 2), fixed(w.latencyMs.p99, 2), fixed(w.latencyMs.p999, 2),
      fixed(w.latencyMs.max, 2), fixed(w.serverCpuUsPerDelivered, 2), fixed(w.serverCpuPercent, 0), fixed(w.clientCpuPercent, 0),
      fixed(w.otherLoadPercent ?? Number.NaN, 0), fixed(w.serverRssPeakMiB, 0), fixed(w.eventsPerFrame, 2), fixed(w.eventLoopDelayP99Ms, 1)
    ])
  )
  const matrix = report.windows.filter((w) => w.phase === 'matrix')
  out.push(windowTable(matrix))
  const matrixMedians = medianTable(matrix)
  if (matrixMedians !== undefined) out.push('', 'The same, median per cell over the rounds (lost: summed)', '', matrixMedians)

  const ratios = ratioRows(report, 'matrix')
  if (ratios.length > 0) {
    out.push('', 'Ratios against the baseline of the same run, median over rounds (target: CPU ≤ 1.1, p99 ≤ 1.2)', '')
    out.push(table(RATIO_HEADER, ratios))
  }
  const equal = report.windows.filter((w) => w.phase === 'equal-rate')
  if (equal.length > 0) {
    out.push('', 'Where the baseline fell behind a target, every variant again at 90 % of the rate the baseline achieved', '')
    out.push(windowTable(equal))
    const equalMedians = medianTable(equal)
    if (equalMedians !== undefined) out.push('', 'The same, median per cell over the rounds (lost: summed)', '', equalMedians)
    out.push('', 'Ratios at that equal rate, median over rounds', '')
    out.push(table(RATIO_HEADER, ratioRows(report, 'equal-rate')))
  }

  if (report.storms.length > 0) {
    out.push('', 'Connection storm: N raw WebSocket handshakes opened at once, until the last `init` arrived (target < 1 s at 1,000)', '')
    out.push(table(['server', 'N', 'ms', 'failed', 'client CPU ms'],
      report.storms.map((s) => [label(s), String(s.clients), fixed(s.ms, 0), String(s.failed), fixed(s.clientCpuMs, 0)])))
  }

  if (report.connections.length > 0) {
    out.push('', 'Connections (RSS after − before, with GC, ÷ N; idle = a hold with no events)', '')
    out.push(table(
      ['server', 'N', 'in flight', 'connect+init ms', 'server CPU ms', 'client CPU ms', 'RSS KiB/conn', 'heap KiB/conn', 'idle CPU %', 'idle loop delay max ms', 'heartbeat'],
      report.connections.map((c) => [
        label(c), String(c.clients), String(c.concurrency), fixed(c.connectMs, 0), fixed(c.connectServerCpuMs, 0), fixed(c.connectClientCpuMs, 0), fixed(c.rssPerConnectionKiB), fixed(c.heapPerConnectionKiB),
        fixed(c.idleCpuPercent), fixed(c.idleEventLoopDelayMaxMs), c.server === 'baseline' ? 'none' : c.heartbeatIntervalMs === undefined ? 'default' : `${c.heartbeatIntervalMs / 1000} s`
      ])
    ))
  }

  for (const c of report.connections.filter((c) => c.heartbeatIntervalMs !== undefined && c.heartbeatIntervalMs <= 60_000 && Number.isFinite(c.idleCpuPercent))) {
    const interval = c.heartbeatIntervalMs as number
    out.push('', `Heartbeat: ${c.clients} idle ${label(c)} clients, one ping round every ${interval} ms: ` +
      `~${fixed(c.idleCpuPercent / 100 * interval, 0)} ms of server CPU per round, longest event-loop stall ${fixed(c.idleEventLoopDelayMaxMs, 0)} ms.`)
    const during = report.windows.filter((w) => w.phase === 'heartbeat')
    if (during.length > 0) {
      out.push('Broadcasting through those rounds (compare the rate search trials at the same rate, which run without heartbeat):', '', windowTable(during))
    }
  }

  if (report.searches.length > 0) {
    out.push('', 'Rate search trials', '', windowTable(report.windows.filter((w) => w.phase === 'search')))
    out.push('', 'Highest rate with p99 < 500 ms, no loss, ≥ 95 % of target achieved', '')
    out.push(table(
      ['server', 'N', 'max ev/s', 'tried (rate: p99 ms, achieved)'],
      report.searches.map((s) => [label(s), String(s.clients), String(s.maxRate),
        s.tried.map((t) => `${t.rate}: ${fixed(t.p99, 0)} ms, ${fixed(t.achieved)}${t.lost > 0 ? `, lost ${t.lost}` : ''}${t.pass ? '' : ' ✗'}`).join('; ')])
    ))
    const baseline = report.searches.find((s) => s.server === 'baseline')
    for (const s of report.searches.filter((s) => s.server === 'service')) {
      if (baseline !== undefined && baseline.maxRate > 0) out.push(`${label(s)} / baseline: ${fixed(s.maxRate / baseline.maxRate, 2)}×`)
    }
  }
  const loaded = report.windows.filter((w) => (w.otherLoadPercent ?? 0) > 25)
  if (loaded.length > 0) {
    out.push('', `warning: ${loaded.length} of ${report.windows.length} windows ran while other processes used more than 25 % of a core; compare A/B pairs, not absolute numbers`)
  }
  if (report.notes.length > 0) out.push('', ...report.notes.map((n) => `note: ${n}`))
  return out.join('\n')
}
