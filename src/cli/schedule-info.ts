import { Cron } from "croner";
import type { ResolvedSchedule } from "../pipeline/spec.js";

/** The next fire times of a pipeline schedule (croner reads 5- and 6-field cron expressions). */
export function nextFireTimes(schedule: ResolvedSchedule, count: number, from = new Date()): Date[] {
  const cron = new Cron(schedule.cron, { timezone: schedule.timezone, paused: true });
  const out = cron.nextRuns(count, from);
  cron.stop();
  return out;
}
