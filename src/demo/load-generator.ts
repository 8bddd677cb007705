import type pg from 'pg';

/** Mixed INSERT/UPDATE/DELETE transactions of 1–20 changes at roughly `rate` changes/s. */
export class LoadGenerator {
  changes = 0;
  transactions = 0;
  private nextCustomer = 1;
  private readonly customers: number[] = [];
  private readonly orders: string[] = [];

  constructor(private readonly db: pg.Client) {}

  async run(durationMs: number, rate: number, failed: () => unknown): Promise<void> {
    const end = Date.now() + durationMs;
    const started = Date.now();
    while (Date.now() < end) {
      if (failed()) throw failed();
      await this.transaction(1 + Math.floor(Math.random() * 20));
      const ahead = this.changes / rate - (Date.now() - started) / 1000;
      if (ahead > 0) await new Promise((r) => setTimeout(r, Math.min(ahead * 1000, end - Date.now())));
    }
  }

  private async transaction(size: number): Promise<void> {
    await this.db.query('BEGIN');
    for (let i = 0; i < size; i++) {
      const dice = Math.random();
      if (dice < 0.35 || this.customers.length < 5) await this.insertCustomer();
      else if (dice < 0.6) await this.insertOrder();
      else if (dice < 0.85) await this.update();
      else await this.remove();
      this.changes++;
    }
    await this.db.query('COMMIT');
    this.transactions++;
  }

  private async insertCustomer(): Promise<void> {
    const id = this.nextCustomer++;
    this.customers.push(id);
    await this.db.query('INSERT INTO customers (id, name, email, balance, tags, profile) VALUES ($1, $2, $3, $4, $5, $6)', [
      id,
      `Customer ${id} "quoted" \u00e9`,
      `c${id}@example.com`,
      (Math.random() * 10000).toFixed(2),
      ['new', id % 2 === 0 ? 'even' : 'odd'],
      JSON.stringify({ tier: id % 3, since: '2026-01-01' }),
    ]);
  }

  private async insertOrder(): Promise<void> {
    const customer = this.customers[Math.floor(Math.random() * this.customers.length)] ?? 1;
    const { rows } = await this.db.query<{ id: string }>(
      `INSERT INTO orders (id, customer_id, amount, status, quantity, weight, placed_on, note)
       VALUES (gen_random_uuid(), $1, $2, 'new', $3, $4, current_date, $5) RETURNING id`,
      [customer, (Math.random() * 500).toFixed(2), 1 + Math.floor(Math.random() * 9), Math.random() * 100, Math.random() < 0.2 ? null : 'x'.repeat(Math.floor(Math.random() * 200))],
    );
    if (rows[0]) this.orders.push(rows[0].id);
  }

  private async update(): Promise<void> {
    if (this.orders.length > 0 && Math.random() < 0.5) {
      const id = this.orders[Math.floor(Math.random() * this.orders.length)];
      await this.db.query("UPDATE orders SET status = (ARRAY['paid','shipped','delivered'])[1 + floor(random() * 3)::int], amount = amount + 1 WHERE id = $1", [id]);
    } else {
      const id = this.customers[Math.floor(Math.random() * this.customers.length)];
      await this.db.query("UPDATE customers SET balance = balance + 1.25, tags = array_append(tags, 'updated'), updated_at = now() WHERE id = $1", [id]);
    }
  }

  private async remove(): Promise<void> {
    if (this.orders.length > 0 && Math.random() < 0.7) {
      const i = Math.floor(Math.random() * this.orders.length);
      const [id] = this.orders.splice(i, 1);
      await this.db.query('DELETE FROM orders WHERE id = $1', [id]);
    } else if (this.customers.length > 5) {
      const i = Math.floor(Math.random() * this.customers.length);
      const [id] = this.customers.splice(i, 1);
      await this.db.query('DELETE FROM customers WHERE id = $1', [id]);
    }
  }
}
