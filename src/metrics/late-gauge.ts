import client from 'prom-client';

/**
 * A gauge without labels that joins its registry at its first `set`. prom-client exports an
 * unlabelled gauge as 0 from the moment it exists; for a value only one role knows (the slot
 * position capture confirmed, the LSN apply applied, the WAL the slot retains, the records
 * apply has not consumed) that 0 is a lie in a process of the other role, which `min()`, an
 * average or an alert reads as a real position. Until this process knows the value, the
 * series is absent, as Prometheus users expect of a process that does not do that work.
 */
export class LateGauge extends client.Gauge {
  private registered = false;

  constructor(
    private readonly target: client.Registry,
    private readonly metricName: string,
    help: string,
  ) {
    super({ name: metricName, help, registers: [] });
  }

  override set(labelsOrValue: Partial<Record<string, string | number>> | number, value?: number): void {
    if (!this.registered) {
      this.target.registerMetric(this);
      this.registered = true;
    }
    if (typeof labelsOrValue === 'number') super.set(labelsOrValue);
    else super.set(labelsOrValue, value ?? 0);
  }

  /** This process no longer knows the value (it stopped doing that work): the series is absent again. */
  withdraw(): void {
    if (!this.registered) return;
    this.target.removeSingleMetric(this.metricName);
    this.registered = false;
    this.reset();
  }
}
