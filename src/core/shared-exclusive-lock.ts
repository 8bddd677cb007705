/**
 * A lock held by any number of shared holders or by one exclusive holder, granted in arrival
 * order (an exclusive waiter is not starved by a stream of shared ones).
 */
export class SharedExclusiveLock {
  private shared = 0;
  private exclusive = false;
  private readonly waiting: { exclusive: boolean; enter: () => void }[] = [];

  /** Runs `fn` holding the lock, exclusively or shared. */
  async run<R>(exclusive: boolean, fn: () => Promise<R>): Promise<R> {
    await this.acquire(exclusive);
    try {
      return await fn();
    } finally {
      if (exclusive) this.exclusive = false;
      else this.shared--;
      this.admit();
    }
  }

  private acquire(exclusive: boolean): Promise<void> {
    if (this.waiting.length === 0 && this.free(exclusive)) {
      this.take(exclusive);
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiting.push({ exclusive, enter: resolve }));
  }

  private admit(): void {
    for (let next = this.waiting[0]; next && this.free(next.exclusive); next = this.waiting[0]) {
      this.waiting.shift();
      this.take(next.exclusive);
      next.enter();
    }
  }

  private free(exclusive: boolean): boolean {
    return !this.exclusive && (!exclusive || this.shared === 0);
  }

  private take(exclusive: boolean): void {
    if (exclusive) this.exclusive = true;
    else this.shared++;
  }
}
