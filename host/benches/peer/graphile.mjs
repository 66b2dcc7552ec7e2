// Graphile Worker on this machine, measured as the cluster benchmark
// measures wasmhive: JOBS no-op jobs added unbatched (one addJob each) by
// SUBMITTERS concurrent adders, one worker process with CONCURRENCY
// concurrent jobs; jobs/s from the first add to the last completion, and
// add -> start per job. Then the same on an idle queue: one job at a time.
//
//   DATABASE_URL=postgres://... node graphile.mjs
import { run, makeWorkerUtils, Logger } from "graphile-worker";

// Warnings and errors only: a line per job would measure the console.
const logger = new Logger(() => (level, message) => {
  if (level === "error" || level === "warning") console.error(message);
});

const connectionString = process.env.DATABASE_URL;
const JOBS = Number(process.env.JOBS ?? 10000);
const SUBMITTERS = Number(process.env.SUBMITTERS ?? 256);
const CONCURRENCY = Number(process.env.CONCURRENCY ?? 32);
const IDLE_JOBS = Number(process.env.IDLE_JOBS ?? 200);

const added = new Map(); // payload id -> add time (ms)
const started = new Map(); // payload id -> start time (ms)
let done = 0;
let allDone;

// As many connections as a wasmhive daemon keeps (16) for the adders, and
// one per concurrent job for the worker, as graphile-worker advises.
const utils = await makeWorkerUtils({ connectionString, logger, maxPoolSize: Number(process.env.ADD_POOL ?? 16) });
await utils.migrate();
await utils.withPgClient((c) => c.query("DELETE FROM graphile_worker._private_jobs"));

const runner = await run({
  connectionString,
  concurrency: CONCURRENCY,
  maxPoolSize: CONCURRENCY + 1,
  noHandleSignals: true,
  logger,
  pollInterval: 1000,
  taskList: {
    noop: async (payload) => {
      started.set(payload.id, performance.now());
      done += 1;
      if (allDone && done >= allDone.n) allDone.resolve();
    },
  },
});

function stats(ids) {
  const lat = ids.map((id) => started.get(id) - added.get(id)).sort((a, b) => a - b);
  const mean = lat.reduce((a, b) => a + b, 0) / lat.length;
  return { p50: lat[Math.floor(lat.length / 2)], mean };
}

// Throughput: everything at once.
const finished = new Promise((resolve) => (allDone = { n: JOBS, resolve }));
const t0 = performance.now();
await Promise.all(
  Array.from({ length: SUBMITTERS }, async (_, s) => {
    for (let i = s; i < JOBS; i += SUBMITTERS) {
      added.set(i, performance.now());
      await utils.addJob("noop", { id: i });
    }
  }),
);
await finished;
const took = (performance.now() - t0) / 1000;
const busy = stats([...Array(JOBS).keys()]);

// Idle: one job at a time, each waited for.
const idleIds = [];
for (let k = 0; k < IDLE_JOBS; k++) {
  const id = JOBS + k;
  idleIds.push(id);
  const one = new Promise((resolve) => (allDone = { n: done + 1, resolve }));
  added.set(id, performance.now());
  await utils.addJob("noop", { id });
  await one;
  await new Promise((r) => setTimeout(r, 5));
}
const idle = stats(idleIds);

console.log(
  `graphile-worker 0.18.0, 1 worker, concurrency ${CONCURRENCY}: ${(JOBS / took).toFixed(0)} jobs/s, ` +
    `add->start p50 ${busy.p50.toFixed(2)} ms, mean ${busy.mean.toFixed(2)} ms; ` +
    `idle p50 ${idle.p50.toFixed(2)} ms, mean ${idle.mean.toFixed(2)} ms`,
);
await runner.stop();
await utils.release();
