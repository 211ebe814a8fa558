DROP TRIGGER oms_operation_done ON operations;
DROP FUNCTION oms_operation_done();
DROP TRIGGER oms_order_changed ON orders;
DROP FUNCTION oms_order_changed();
DROP TABLE order_watches;
