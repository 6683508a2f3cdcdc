package fi.toisio.spark;

import org.apache.spark.sql.api.java.UDF2;

/**
 * Why a normalised Finnish personal identity code (upper-cased, trimmed) is not usable, or null if it is.
 *
 * <p>The rules and reason names of {@code pseudonymise.hetu.rejection_reason}, checked in the same order:
 * missing, format ({@code DDMMYY}, a century sign, {@code NNN}, a control character of {@code [0-9A-Y]};
 * exactly eleven characters), date (a real date in the sign's century), individual number (at least 002),
 * control character (the nine digits modulo 31), temporary (900-999, unless the second argument is true).
 * The same rules are Catalyst expressions in {@code pseudonymise.validate}, which the tests hold this class
 * to, code for code.
 */
public final class HetuReason implements UDF2<String, Boolean, String> {
    private static final long serialVersionUID = 1L;
    private static final String ALPHABET = "0123456789ABCDEFHJKLMNPRSTUVWXY";

    private static int century(char sign) {
        if (sign == '+') {
            return 1800;
        }
        if (sign == '-' || (sign >= 'U' && sign <= 'Y')) {
            return 1900;
        }
        if (sign >= 'A' && sign <= 'F') {
            return 2000;
        }
        return -1;
    }

    @Override
    public String call(String code, Boolean allowTemporary) {
        if (code == null || code.isEmpty()) {
            return "hetu_missing";
        }
        if (code.length() != 11) {
            return "hetu_format";
        }
        int ddmmyy = Fields.digits(code, 0, 6);
        int nnn = Fields.digits(code, 7, 10);
        int century = century(code.charAt(6));
        char check = code.charAt(10);
        boolean checkShape = (check >= '0' && check <= '9') || (check >= 'A' && check <= 'Y');
        if (ddmmyy < 0 || nnn < 0 || century < 0 || !checkShape) {
            return "hetu_format";
        }
        int dd = ddmmyy / 10000;
        int mm = ddmmyy / 100 % 100;
        int year = century + ddmmyy % 100;
        if (mm < 1 || mm > 12) {
            return "hetu_date";
        }
        if (dd < 1 || dd > Fields.daysInMonth(year, mm)) {
            return "hetu_date";
        }
        if (nnn < 2) {
            return "hetu_individual_number";
        }
        if (ALPHABET.charAt((int) ((ddmmyy * 1000L + nnn) % 31)) != check) {
            return "hetu_checksum";
        }
        if (nnn >= 900 && !Boolean.TRUE.equals(allowTemporary)) {
            return "hetu_temporary";
        }
        return null;
    }
}
