DROP TABLE operations;
DROP FUNCTION oms_operation_done();
