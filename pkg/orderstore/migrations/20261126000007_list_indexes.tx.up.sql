-- ListOrders for a service client with a filter: its own orders of one
-- customer, or in one state, newest first. Without these the prepared
-- statement's generic plan walks orders_created_by_create_time_idx (or the
-- create_time index) and filters, which grows with the table (measured by
-- make bench's "ListOrders as the table grows": 5.5 ms of PostgreSQL CPU
-- at 100k orders, 93 ms at 1M). With them the first page is an index range
-- read, flat in the table's size.
CREATE INDEX orders_created_by_customer_time_idx ON orders (created_by, customer_id, create_time DESC, id DESC);
CREATE INDEX orders_created_by_state_time_idx ON orders (created_by, state, create_time DESC, id DESC);
