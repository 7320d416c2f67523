/**
 * QEMU's human monitor (HMP) over a unix socket (`-monitor
 * unix:PATH,server=on,wait=off`): run commands one after another and get
 * each one's output (the text up to the next `(qemu) ` prompt).
 * Main-thread test helper.
 */
import net from 'node:net';

/** Run `commands` on the monitor at `socketPath`; returns each one's output. Throws when a prompt takes over `timeoutMs`. */
export async function hmpCommands(socketPath: string, commands: string[], timeoutMs = 30_000): Promise<string[]> {
  const sock = net.createConnection(socketPath);
  let buf = '';
  let wake: (() => void) | null = null;
  sock.on('data', (d) => {
    buf += d.toString('utf8');
    wake?.();
  });
  const prompt = async (): Promise<string> => {
    const deadline = Date.now() + timeoutMs;
    while (!buf.includes('(qemu) ')) {
      if (Date.now() > deadline) throw new Error(`no HMP prompt; got ${JSON.stringify(buf)}`);
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, 200);
      });
    }
    const i = buf.indexOf('(qemu) ');
    const out = buf.slice(0, i);
    buf = buf.slice(i + 7);
    return out;
  };
  try {
    await new Promise<void>((resolve, reject) => {
      sock.once('connect', resolve);
      sock.once('error', reject);
    });
    await prompt();
    const outs: string[] = [];
    for (const c of commands) {
      sock.write(`${c}\n`);
      outs.push(await prompt());
    }
    return outs;
  } finally {
    sock.destroy();
  }
}
