package orderstore

// ListSQL is the statement and parameters List runs for q.
func ListSQL(q ListQuery) (string, []any, error) {
	query, args, _, _, _, err := listSQL(q)
	return query, args, err
}
