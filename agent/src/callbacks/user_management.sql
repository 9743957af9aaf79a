-- The user_management helpers Spilo installs in every database, so that members of `admin` can manage
-- users without being superusers. SECURITY DEFINER with a pinned search_path; callable by admin only.
-- The HUMAN_ROLE placeholder below is replaced by HUMAN_ROLE as a SQL string literal.
CREATE SCHEMA IF NOT EXISTS user_management;
GRANT USAGE ON SCHEMA user_management TO admin;

-- Passwords come from gen_random_uuid(), which uses the server's strong random source (random() does not).
CREATE OR REPLACE FUNCTION user_management.random_password(length integer) RETURNS text
LANGUAGE sql VOLATILE SET search_path = pg_catalog AS $fn$
    SELECT substr(translate(encode(decode(replace(
        gen_random_uuid()::text || gen_random_uuid()::text || gen_random_uuid()::text || gen_random_uuid()::text,
        '-', ''), 'hex'), 'base64'), '+/=', 'xyz'), 1, length)
$fn$;

CREATE OR REPLACE FUNCTION user_management.create_application_user(username text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $fn$
DECLARE
    pw text := user_management.random_password(20);
BEGIN
    EXECUTE format('CREATE USER %I WITH PASSWORD %L', username, pw);
    RETURN pw;
END
$fn$;

CREATE OR REPLACE FUNCTION user_management.create_application_user_or_change_password(username text, password text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $fn$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = username) THEN
        EXECUTE format('ALTER ROLE %I WITH PASSWORD %L', username, password);
    ELSE
        EXECUTE format('CREATE USER %I WITH PASSWORD %L', username, password);
    END IF;
END
$fn$;

CREATE OR REPLACE FUNCTION user_management.create_user(username text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $fn$
BEGIN
    EXECUTE format('CREATE USER %I IN ROLE %I, admin', username, {human_role_literal});
    EXECUTE format('ALTER ROLE %I SET log_statement TO ''all''', username);
END
$fn$;

CREATE OR REPLACE FUNCTION user_management.create_role(rolename text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $fn$
BEGIN
    EXECUTE format('CREATE ROLE %I ADMIN admin', rolename);
END
$fn$;

CREATE OR REPLACE FUNCTION user_management.revoke_admin(username text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $fn$
BEGIN
    EXECUTE format('REVOKE admin FROM %I', username);
END
$fn$;

CREATE OR REPLACE FUNCTION user_management.drop_user(username text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $fn$
BEGIN
    EXECUTE format('DROP USER %I', username);
END
$fn$;

CREATE OR REPLACE FUNCTION user_management.drop_role(username text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $fn$
BEGIN
    EXECUTE format('DROP ROLE %I', username);
END
$fn$;

CREATE OR REPLACE FUNCTION user_management.terminate_backend(pid integer) RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog AS $fn$
    SELECT pg_terminate_backend(pid)
$fn$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA user_management FROM public;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA user_management TO admin;
GRANT SELECT ON pg_catalog.pg_stat_activity TO admin;
GRANT EXECUTE ON FUNCTION pg_catalog.pg_switch_wal() TO admin;
