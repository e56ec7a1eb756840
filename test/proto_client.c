/*-------------------------------------------------------------------------
 *
 * proto_client.c
 *	  Writes and reads an encrypted column through the extended query
 *	  protocol the way drivers do, and prints what came back, for
 *	  t/006_extended_protocol.pl to check:
 *
 *	  - untyped parameters (OID 0: node-postgres, DBD::Pg), in PQexecParams
 *		and in a named prepared statement run many times;
 *	  - parameters typed text, and varchar (PgJDBC's setString);
 *	  - a parameter in binary format (the plain type's binary form);
 *	  - WHERE col = $1 with an untyped parameter;
 *	  - results in binary format.
 *
 * usage: proto_client "<conninfo>" <table>
 * The table has columns (id integer, s colcrypt.encrypted_text(<key>)).
 *
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#define TEXTOID 25
#define VARCHAROID 1043

static PGconn *conn;
static char *table;

static void
check(PGresult *res, const char *what)
{
	ExecStatusType st = PQresultStatus(res);

	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
	{
		printf("%s: ERROR %s %s", what,
			   PQresultErrorField(res, PG_DIAG_SQLSTATE),
			   PQresultErrorMessage(res));
		PQclear(res);
		return;
	}
	printf("%s: ok", what);
	if (st == PGRES_TUPLES_OK)
		printf(" (%d rows)", PQntuples(res));
	printf("\n");
	PQclear(res);
}

static void
insert(const char *what, int id, const char *value, Oid type, int format, int len)
{
	char		sql[256];
	char		idbuf[16];
	const char *values[2] = {idbuf, value};
	Oid			types[2] = {0, type};
	int			lengths[2] = {0, len};
	int			formats[2] = {0, format};

	snprintf(idbuf, sizeof(idbuf), "%d", id);
	snprintf(sql, sizeof(sql), "INSERT INTO %s (id, s) VALUES ($1, $2)", table);
	check(PQexecParams(conn, sql, 2, types, values, lengths, formats, 0), what);
}

int
main(int argc, char **argv)
{
	char		sql[256];
	PGresult   *res;

	if (argc != 3)
	{
		fprintf(stderr, "usage: %s <conninfo> <table>\n", argv[0]);
		return 2;
	}
	table = argv[2];
	conn = PQconnectdb(argv[1]);
	if (PQstatus(conn) != CONNECTION_OK)
	{
		fprintf(stderr, "connection failed: %s", PQerrorMessage(conn));
		return 2;
	}

	insert("untyped param", 1, "untyped value", 0, 0, 0);
	insert("text param", 2, "text value", TEXTOID, 0, 0);
	insert("varchar param", 3, "varchar value", VARCHAROID, 0, 0);
	insert("binary untyped param", 4, "binary value", 0, 1, (int) strlen("binary value"));
	insert("binary text param", 5, "binary text value", TEXTOID, 1, (int) strlen("binary text value"));

	/* A named prepared statement with untyped parameters, run 20 times. */
	snprintf(sql, sizeof(sql), "INSERT INTO %s (id, s) VALUES ($1, $2)", table);
	check(PQprepare(conn, "ins", sql, 2, NULL), "prepare untyped");
	for (int i = 0; i < 20; i++)
	{
		char		idbuf[16];
		char		valbuf[32];
		const char *values[2] = {idbuf, valbuf};

		snprintf(idbuf, sizeof(idbuf), "%d", 100 + i);
		snprintf(valbuf, sizeof(valbuf), "prepared %d", i);
		res = PQexecPrepared(conn, "ins", 2, values, NULL, NULL, 0);
		if (PQresultStatus(res) != PGRES_COMMAND_OK)
			check(res, "execute prepared");
		else
			PQclear(res);
	}
	printf("execute prepared: 20 done\n");

	/* WHERE s = $1, untyped and typed text. */
	{
		const char *values[1] = {"varchar value"};
		Oid			textoid[1] = {TEXTOID};

		snprintf(sql, sizeof(sql), "SELECT id FROM %s WHERE s = $1", table);
		res = PQexecParams(conn, sql, 1, NULL, values, NULL, NULL, 0);
		printf("where untyped: %s\n",
			   PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) :
			   PQresultErrorMessage(res));
		PQclear(res);
		res = PQexecParams(conn, sql, 1, textoid, values, NULL, NULL, 0);
		printf("where text: %s\n",
			   PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) :
			   PQresultErrorMessage(res));
		PQclear(res);
	}

	/* Everything back, text format and binary format. */
	snprintf(sql, sizeof(sql), "SELECT id, s FROM %s ORDER BY id", table);
	res = PQexecParams(conn, sql, 0, NULL, NULL, NULL, NULL, 0);
	for (int i = 0; i < PQntuples(res); i++)
		printf("text row %s: %s\n", PQgetvalue(res, i, 0), PQgetvalue(res, i, 1));
	PQclear(res);
	snprintf(sql, sizeof(sql), "SELECT s FROM %s WHERE id <= 5 ORDER BY id", table);
	res = PQexecParams(conn, sql, 0, NULL, NULL, NULL, NULL, 1);
	for (int i = 0; i < PQntuples(res); i++)
		printf("binary row %d: %.*s\n", i + 1, PQgetlength(res, i, 0), PQgetvalue(res, i, 0));
	PQclear(res);

	PQfinish(conn);
	return 0;
}
