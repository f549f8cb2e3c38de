-- The erasure statement unlinks the large objects the rows it deletes or anonymizes point at
-- (a step's unlink_large_objects): called on each such row's column, it removes the large
-- object if it is still there (two rows may share one) and answers NULL, the value an
-- anonymizing action writes. Unlinking needs the large object's ownership (or a superuser).
CREATE FUNCTION erasure.unlink_large_object(large_object oid) RETURNS oid
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog AS $$
BEGIN
    IF large_object IS NOT NULL
       AND EXISTS (SELECT 1 FROM pg_catalog.pg_largeobject_metadata WHERE oid = large_object) THEN
        PERFORM pg_catalog.lo_unlink(large_object);
    END IF;
    RETURN NULL;
END $$;
