-- A command's whole write is one statement (orderstore.Save): its rows are
-- data-modifying WITH queries, and the order's version guard is this
-- function, which fails the statement, and so every row in it, when the
-- guarded UPDATE found the order changed. SQLSTATE OMS01 is ours.
CREATE FUNCTION oms_expect(ok boolean, what text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF NOT ok THEN
        RAISE EXCEPTION USING ERRCODE = 'OMS01', MESSAGE = what;
    END IF;
    RETURN true;
END
$$;
