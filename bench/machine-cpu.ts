import { readFileSync } from 'node:fs'

/**
 * Whole-machine CPU over a window, from /proc/stat. The processes' own
 * `cpuUsage()` leaves out softirq time (on loopback the receiving side of
 * every TCP send runs there) and time lost to steal, so the runner reports
 * the machine's split next to them.
 */

export interface MachineCpuSample {
  at: number
  /** Jiffies per field of the aggregate `cpu` line: user nice system idle iowait irq softirq steal. */
  fields: number[]
}

export interface MachineCpu {
  /** Percent of all cores, summing to ~100. */
  userPercent: number
  systemPercent: number
  softirqPercent: number
  stealPercent: number
  idlePercent: number
}

export function sampleMachineCpu (): MachineCpuSample | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? ''
    return { at: Date.now(), fields: line.trim().split(/\s+/).slice(1, 9).map(Number) }
  } catch {
    return undefined
  }
}

export function machineCpuBetween (before: MachineCpuSample | undefined, after: MachineCpuSample | undefined): MachineCpu | undefined {
  if (before === undefined || after === undefined) return undefined
  const d = after.fields.map((value, i) => value - (before.fields[i] ?? 0))
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = d
  const total = d.reduce((a, b) => a + b, 0) || 1
  const percent = (value: number): number => 100 * value / total
  return {
    userPercent: percent(user + nice),
    systemPercent: percent(system + irq),
    softirqPercent: percent(softirq),
    stealPercent: percent(steal),
    idlePercent: percent(idle + iowait)
  }
}
