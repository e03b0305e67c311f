-- The example database: `sqlite3 tickets.db < tickets.sql` (or `bun -e` with bun:sqlite) rebuilds tickets.db.
CREATE TABLE tickets (ticket_id TEXT, subject TEXT, body TEXT, opened TEXT);
INSERT INTO tickets VALUES ('T-1001', 'Charged twice for March', 'My card shows two charges of 49.00 on 3 March.', '2026-03-04');
INSERT INTO tickets VALUES ('T-1002', 'App crashes on save', 'Version 4.2 closes itself whenever I press Save on a draft.', '2026-03-04');
INSERT INTO tickets VALUES ('T-1003', 'How do I export to CSV?', 'Is there a way to get all my invoices as a spreadsheet?', '2026-03-05');
INSERT INTO tickets VALUES ('T-1004', 'Wrong VAT rate on invoice', 'Invoice 2026-0311 uses 19% but we are in Austria (20%).', '2026-03-05');
INSERT INTO tickets VALUES ('T-1005', 'Login link expired', 'The magic link says expired even when I click it at once.', '2026-03-06');
INSERT INTO tickets VALUES ('T-1006', 'Add dark mode', 'Would love a dark theme for late-night work.', '2026-03-07');
