DROP FUNCTION oms_expect(boolean, text);
