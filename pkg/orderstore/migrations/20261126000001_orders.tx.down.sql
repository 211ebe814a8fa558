DROP TABLE processed_commands;
DROP TABLE order_events;
DROP FUNCTION order_events_append_only();
DROP TABLE order_line_items;
DROP TABLE orders;
