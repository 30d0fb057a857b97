/*
 * A PKCS#11 module that forwards every call to another one (SoftHSM2, named by
 * PKCS11_LOCKOUT_TARGET) and adds what SoftHSM2 lacks and a CPS card has: the user PIN
 * blocks after three wrong tries in a row, and C_GetTokenInfo reports the count as a
 * card's module does (count low after one wrong try, final try after two, locked).
 * With PKCS11_LOCKOUT_PINPAD set, the token says it reads the PIN on the reader
 * (protected authentication path) and a C_Login without a PIN uses that value, as if
 * typed on the reader's keypad. With PKCS11_LOCKOUT_SLOW_PIN set, a C_Login with that PIN
 * waits three seconds first (a card slow to answer: the login's deadline passes, and the
 * PIN reaches the card all the same). With PKCS11_LOCKOUT_HELD set, the token starts
 * logged in, as when another session of the process holds it: C_Login answers
 * CKR_USER_ALREADY_LOGGED_IN, whatever the PIN, until a C_Logout.
 * Built by the test harness (tests/support/softhsm.rs) with gcc; never shipped.
 *
 * Only the function list's layout is needed (PKCS#11 2.40: a version, then 68 function
 * pointers in the standard's order), so no PKCS#11 header is included.
 */
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef unsigned long CK_RV;
typedef unsigned long CK_ULONG;

#define FUNCTIONS 68
#define GET_TOKEN_INFO 6
#define LOGIN 18
#define LOGOUT 19
#define CKR_OK 0x0UL
#define CKR_GENERAL_ERROR 0x5UL
#define CKR_PIN_INCORRECT 0xA0UL
#define CKR_PIN_LOCKED 0xA4UL
#define CKR_USER_ALREADY_LOGGED_IN 0x100UL
#define CKU_USER 1UL
#define CKF_USER_PIN_COUNT_LOW 0x10000UL
#define CKF_USER_PIN_FINAL_TRY 0x20000UL
#define CKF_USER_PIN_LOCKED 0x40000UL
#define CKF_PROTECTED_AUTHENTICATION_PATH 0x100UL
/* CK_TOKEN_INFO: label[32], manufacturerID[32], model[16], serialNumber[16], flags. */
#define TOKEN_FLAGS_OFFSET 96

struct function_list {
    unsigned char version[2];
    void *functions[FUNCTIONS];
};

typedef CK_RV (*get_function_list_fn)(struct function_list **);
typedef CK_RV (*get_token_info_fn)(CK_ULONG, void *);
typedef CK_RV (*login_fn)(CK_ULONG, CK_ULONG, unsigned char *, CK_ULONG);
typedef CK_RV (*logout_fn)(CK_ULONG);

static struct function_list wrapped;
static struct function_list *target;
static int wrong_in_a_row;
/* -1 until the first C_Login reads PKCS11_LOCKOUT_HELD. */
static int held = -1;

static CK_RV get_token_info(CK_ULONG slot, void *info) {
    CK_RV rv = ((get_token_info_fn)target->functions[GET_TOKEN_INFO])(slot, info);
    if (rv != CKR_OK) {
        return rv;
    }
    CK_ULONG flags;
    memcpy(&flags, (unsigned char *)info + TOKEN_FLAGS_OFFSET, sizeof flags);
    flags &= ~(CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_FINAL_TRY | CKF_USER_PIN_LOCKED);
    if (getenv("PKCS11_LOCKOUT_PINPAD") != NULL) {
        flags |= CKF_PROTECTED_AUTHENTICATION_PATH;
    }
    if (wrong_in_a_row >= 3) {
        flags |= CKF_USER_PIN_LOCKED;
    } else if (wrong_in_a_row == 2) {
        flags |= CKF_USER_PIN_FINAL_TRY;
    } else if (wrong_in_a_row == 1) {
        flags |= CKF_USER_PIN_COUNT_LOW;
    }
    memcpy((unsigned char *)info + TOKEN_FLAGS_OFFSET, &flags, sizeof flags);
    return CKR_OK;
}

static CK_RV login(CK_ULONG session, CK_ULONG user, unsigned char *pin, CK_ULONG length) {
    if (held < 0) {
        held = getenv("PKCS11_LOCKOUT_HELD") != NULL;
    }
    if (held) {
        return CKR_USER_ALREADY_LOGGED_IN;
    }
    if (user == CKU_USER && wrong_in_a_row >= 3) {
        return CKR_PIN_LOCKED;
    }
    const char *pad = getenv("PKCS11_LOCKOUT_PINPAD");
    if (pin == NULL && pad != NULL) {
        pin = (unsigned char *)pad;
        length = strlen(pad);
    }
    const char *slow = getenv("PKCS11_LOCKOUT_SLOW_PIN");
    if (slow != NULL && pin != NULL && length == strlen(slow) && memcmp(pin, slow, length) == 0) {
        sleep(3);
    }
    CK_RV rv = ((login_fn)target->functions[LOGIN])(session, user, pin, length);
    if (user == CKU_USER) {
        if (rv == CKR_PIN_INCORRECT) {
            wrong_in_a_row++;
            if (wrong_in_a_row >= 3) {
                return CKR_PIN_LOCKED;
            }
        } else if (rv == CKR_OK) {
            wrong_in_a_row = 0;
        }
    }
    return rv;
}

static CK_RV logout(CK_ULONG session) {
    held = 0;
    return ((logout_fn)target->functions[LOGOUT])(session);
}

CK_RV C_GetFunctionList(struct function_list **list) {
    if (target == NULL) {
        const char *path = getenv("PKCS11_LOCKOUT_TARGET");
        void *module = path ? dlopen(path, RTLD_NOW | RTLD_LOCAL) : NULL;
        get_function_list_fn get = module ? (get_function_list_fn)dlsym(module, "C_GetFunctionList") : NULL;
        if (get == NULL || get(&target) != CKR_OK) {
            target = NULL;
            return CKR_GENERAL_ERROR;
        }
        memcpy(&wrapped, target, sizeof wrapped);
        wrapped.functions[GET_TOKEN_INFO] = (void *)get_token_info;
        wrapped.functions[LOGIN] = (void *)login;
        wrapped.functions[LOGOUT] = (void *)logout;
        /* The list's own C_GetFunctionList entry is this one. */
        wrapped.functions[3] = (void *)C_GetFunctionList;
    }
    *list = &wrapped;
    return CKR_OK;
}
