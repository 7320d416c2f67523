/**
 * The end of a command-line entry: the exit code from its main, and a throw
 * reported on stderr as `<prog>: <stack>` with exit code `failCode`.
 * Used by vhostd-rpc, vhostd-top and the bench scripts. Thread: main.
 */
export function exitWhenDone(prog: string, main: Promise<number>, failCode: number): void {
  main.then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`${prog}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exitCode = failCode;
    },
  );
}
