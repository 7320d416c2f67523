/**
 * Does KVM work on this host? A `-accel kvm` QEMU can hang or crawl where
 * /dev/kvm opens but cannot run a guest, so the probe boots a real guest
 * kernel: vhostd --default uses it to print a QEMU line that works as
 * printed, bench/guest-fio to choose its accelerator. Main thread.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';

export interface AccelChoice {
  accel: 'kvm' | 'tcg';
  why: string;
}

/**
 * Does KVM work? Boots the guest kernel under `-accel kvm` for up to
 * `probeMs` with earlyprintk on the serial port: KVM works when the kernel
 * prints its first lines in time (a vCPU really ran guest code). On these
 * project machines /dev/kvm opens and even runs SeaBIOS, but the kernel's
 * real-mode setup never prints anything: hence a kernel, not just a BIOS.
 */
export async function probeKvm(kernel: string, probeMs = 1000): Promise<AccelChoice> {
  try {
    fs.accessSync('/dev/kvm', fs.constants.R_OK | fs.constants.W_OK);
  } catch (err) {
    return { accel: 'tcg', why: `/dev/kvm is not usable (${(err as NodeJS.ErrnoException).code ?? 'error'})` };
  }
  const child = spawn(
    'qemu-system-x86_64',
    ['-accel', 'kvm', '-machine', 'q35', '-cpu', 'max', '-m', '128', '-display', 'none', '-nodefaults', '-monitor', 'none',
      '-serial', 'stdio', '-no-reboot', '-kernel', kernel, '-append', 'console=ttyS0 earlyprintk=ttyS0 panic=-1'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  let stderr = '';
  const started = Date.now();
  return new Promise<AccelChoice>((resolve) => {
    let done = false;
    const finish = (c: AccelChoice): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      child.kill('SIGKILL');
      resolve(c);
    };
    const timer = setTimeout(
      () => finish({ accel: 'tcg', why: `under -accel kvm the guest kernel printed nothing within ${probeMs} ms` }),
      probeMs,
    );
    child.stdout.on('data', (b: Buffer) => {
      out += b.toString('utf8');
      if (/Linux version|Probing EDD/.test(out)) {
        finish({ accel: 'kvm', why: `the guest kernel started under KVM in a ${probeMs} ms probe (${Date.now() - started} ms)` });
      }
    });
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString('utf8')));
    child.once('error', (err) => finish({ accel: 'tcg', why: `qemu-system-x86_64: ${err.message}` }));
    child.once('close', (code) =>
      finish({ accel: 'tcg', why: `qemu -accel kvm exited (${String(code)}): ${stderr.trim().split('\n').pop() ?? ''}` }),
    );
  });
}
