DROP TRIGGER oms_order_changed ON orders;
DROP FUNCTION oms_order_changed();
