// BullMQ doing what crates/queue/examples/queue_bench.rs does: N no-op jobs added in bulk,
// then processed by one worker with concurrency C, on the local Redis.
// Env: REDIS_HOST (127.0.0.1), REDIS_PORT (6379), N (10000), BATCH (1000), CONCURRENCY (10).
const { Queue, Worker } = require('bullmq');

const connection = { host: process.env.REDIS_HOST || '127.0.0.1', port: Number(process.env.REDIS_PORT || 6379) };
const N = Number(process.env.N || 10000);
const BATCH = Number(process.env.BATCH || 1000);
const CONCURRENCY = Number(process.env.CONCURRENCY || 10);

async function main() {
  const name = `lexiflow-bench-${process.pid}-${Date.now()}`;
  const queue = new Queue(name, { connection });
  let t = process.hrtime.bigint();
  for (let i = 0; i < N; i += BATCH) {
    const jobs = [];
    for (let j = i; j < Math.min(N, i + BATCH); j++) jobs.push({ name: 'noop', data: { i: j } });
    await queue.addBulk(jobs);
  }
  const enqueueSecs = Number(process.hrtime.bigint() - t) / 1e9;

  let done = 0;
  t = process.hrtime.bigint();
  await new Promise((resolve, reject) => {
    const worker = new Worker(name, async () => null, { connection, concurrency: CONCURRENCY });
    worker.on('completed', () => {
      done += 1;
      if (done === N) worker.close().then(resolve, reject);
    });
    worker.on('failed', (_job, err) => reject(err));
  });
  const processSecs = Number(process.hrtime.bigint() - t) / 1e9;
  const version = require('bullmq/package.json').version;
  console.log(`bullmq ${version} N=${N} enqueue=${(N / enqueueSecs).toFixed(0)} jobs/s (addBulk ${BATCH}) process=${(N / processSecs).toFixed(0)} jobs/s (1 worker, concurrency ${CONCURRENCY})`);
  await queue.obliterate({ force: true });
  await queue.close();
}

main().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
